//! Migration files: the strict loader of a migrations directory and the comparison of a
//! history with it ([`migrations`]), the statement splitter that cuts a file as psql
//! would ([`statements`]), and the lint of a file's statements ([`lint`]). Nothing here
//! opens a connection.

pub mod lint;
pub mod migrations;
pub mod statements;
