//! Migration files: the strict loader of a migrations directory and the comparison of a
//! history with it ([`migrations`]), and the statement splitter that cuts a file as psql
//! would ([`statements`]). Nothing here opens a connection.

pub mod migrations;
pub mod statements;
