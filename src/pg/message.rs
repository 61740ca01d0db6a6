//! A PostgreSQL client error as one line for people: the server's message with its
//! detail, hint and context, or the connection error with its causes.

/// A PostgreSQL error as one line: the server's message with detail and hint, or the
/// client-side cause chain.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        if let Some(w) = db.where_() {
            s.push_str(&format!(" (where: {})", w.replace('\n', "; ")));
        }
        return s;
    }
    let mut s = e.to_string();
    for cause in causes(e).skip(1) {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
    }
    s
}

/// An error and its causes, outermost first.
pub fn causes<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}
