//! TLS that encrypts without verifying the server's certificate: libpq's `sslmode=prefer`
//! and `sslmode=require` when no root certificate is given, the default setup.
//!
//! Built on a bare OpenSSL client context rather than `native-tls`, because `native-tls`
//! loads the operating system's whole trust store into every connector it builds (about
//! 150 ms on a Debian machine), and this mode never looks at it: a command that reads one
//! tenant's status would spend most of its time there. The modes that verify a chain
//! (`verify-ca`, `verify-full`, a root certificate) keep using `native-tls`, see
//! [`crate::pg::db`].
//!
//! Like libpq, the server name is sent (SNI) when the host is a name, not an address, and
//! the `tls-server-end-point` channel binding is offered to SCRAM authentication.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{Ssl, SslContext, SslMethod, SslRef, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;
use tokio_postgres::tls::{self, ChannelBinding, MakeTlsConnect, TlsConnect};

/// Makes encrypted, unverified TLS sessions; cheap to clone (the context is shared).
#[derive(Clone)]
pub struct Encrypting {
    context: SslContext,
}

impl Encrypting {
    /// A client context that accepts any certificate: no trust store is loaded.
    pub fn new() -> Result<Encrypting, String> {
        let mut builder =
            SslContext::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        builder.set_verify(SslVerifyMode::NONE);
        Ok(Encrypting {
            context: builder.build(),
        })
    }
}

impl<S> MakeTlsConnect<S> for Encrypting
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Handshake;
    type Error = openssl::error::ErrorStack;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, Self::Error> {
        let mut ssl = Ssl::new(&self.context)?;
        if !host.is_empty() && host.parse::<IpAddr>().is_err() {
            ssl.set_hostname(host)?;
        }
        Ok(Handshake { ssl })
    }
}

/// One connection's TLS handshake, ready to run over the socket.
pub struct Handshake {
    ssl: Ssl,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = Failure;
    type Future = Pin<Box<dyn Future<Output = Result<Stream<S>, Failure>> + Send>>;

    fn connect(self, socket: S) -> Self::Future {
        Box::pin(async move {
            let mut stream = SslStream::new(self.ssl, socket)?;
            Pin::new(&mut stream).connect().await?;
            Ok(Stream(stream))
        })
    }
}

/// An established TLS session over `S`.
pub struct Stream<S>(SslStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match server_end_point(self.0.ssl()) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929's `tls-server-end-point`: the server certificate hashed with its signature's
/// hash function, SHA-256 in place of MD5 and SHA-1. `None` when the certificate's
/// signature names no hash function (Ed25519): such a session offers no binding.
fn server_end_point(ssl: &SslRef) -> Option<Vec<u8>> {
    let cert = ssl.peer_certificate()?;
    let signed_with = cert
        .signature_algorithm()
        .object()
        .nid()
        .signature_algorithms()?;
    let digest = match signed_with.digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        other => MessageDigest::from_nid(other)?,
    };
    cert.digest(digest).ok().map(|d| d.to_vec())
}

/// How TLS sessions are made.
#[derive(Clone)]
pub enum Tls {
    /// Checking the server's certificate chain (and maybe its name): `native-tls`, whose
    /// connector loads the system's trust store, which costs about 150 ms.
    Verifying(postgres_native_tls::MakeTlsConnector),
    /// Encrypting only, as libpq's `prefer` and `require` without a root certificate:
    /// no trust store is loaded (see [`Encrypting`]).
    Encrypting(Encrypting),
}
