//! The service's own traffic as metrics: requests by route and status, and a latency
//! histogram by route, added to `GET /metrics` after the fleet's. A route is the
//! router's pattern (`/api/tenants/{tenant_id}/migration-status`), never the path a
//! client sent, so the number of series does not grow with the fleet or with probes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::app::metrics::{Kind, Text};

/// The latency histogram's upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The route of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Counts since the service started.
#[derive(Debug, Default)]
pub struct Traffic {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Traffic {
    /// Counts one answered request.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let Ok(mut counts) = self.inner.lock() else {
            return;
        };
        *counts
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
        let h = counts.latency.entry(route.to_string()).or_default();
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Writes the counts as Prometheus families.
    pub fn render(&self, out: &mut Text) {
        let (requests, latency) = match self.inner.lock() {
            Ok(c) => (c.requests.clone(), c.latency.clone()),
            Err(_) => return,
        };
        out.family(
            "tenantctl_http_requests_total",
            Kind::Counter,
            "Requests the service answered since it started, by route and HTTP status.",
        );
        for ((route, status), n) in &requests {
            out.sample(
                "tenantctl_http_requests_total",
                &[("route", route), ("status", &status.to_string())],
                n,
            );
        }
        let name = "tenantctl_http_request_duration_seconds";
        out.family(
            name,
            Kind::Histogram,
            "How long the service took to answer, by route.",
        );
        for (route, h) in &latency {
            let mut below = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                below += n;
                out.sample(
                    &format!("{name}_bucket"),
                    &[("route", route), ("le", &bound.to_string())],
                    below,
                );
            }
            out.sample(
                &format!("{name}_bucket"),
                &[("route", route), ("le", "+Inf")],
                h.count,
            );
            out.sample(&format!("{name}_sum"), &[("route", route)], h.sum);
            out.sample(&format!("{name}_count"), &[("route", route)], h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_every_request() {
        let t = Traffic::default();
        t.record("/healthz", 200, Duration::from_millis(3));
        t.record("/healthz", 200, Duration::from_millis(70));
        t.record("/healthz", 503, Duration::from_secs(60));
        let mut out = Text::default();
        t.render(&mut out);
        let text = out.0;
        for line in [
            "# TYPE tenantctl_http_requests_total counter\n",
            "tenantctl_http_requests_total{route=\"/healthz\",status=\"200\"} 2\n",
            "tenantctl_http_requests_total{route=\"/healthz\",status=\"503\"} 1\n",
            "# TYPE tenantctl_http_request_duration_seconds histogram\n",
            "tenantctl_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.005\"} 1\n",
            "tenantctl_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.05\"} 1\n",
            "tenantctl_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.1\"} 2\n",
            "tenantctl_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"30\"} 2\n",
            "tenantctl_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 3\n",
            "tenantctl_http_request_duration_seconds_count{route=\"/healthz\"} 3\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
