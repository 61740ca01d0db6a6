//! The tenant archive: one file that carries a tenant's data (the book's "Tenant data").
//!
//! Layout: eight magic bytes, then one zstd stream (with zstd's own content checksum)
//! holding a sequence of records. Each record is a one-byte tag, a big-endian `u32`
//! payload length and the payload:
//!
//! | tag | payload |
//! |-----|---------|
//! | `M` | the [`Manifest`], JSON; always the first record |
//! | `D` | `u32` table index, then a piece of that table's rows in COPY format |
//! | `E` | `u32` table index, `u64` row count: the end of that table's rows |
//! | `Z` | the SHA-256 of every record before it (tags, lengths and payloads); last |
//!
//! Tables come one after another, in the manifest's order, each closed by its `E`. After
//! `Z` nothing may follow. The writer and the reader are plain `std::io` so they run on a
//! blocking thread and stream: memory is bounded by one record, whatever the archive's
//! size. Every way an archive can be damaged (not an archive, another format version,
//! truncated, a changed byte, records out of order) is an [`ArchiveError`] and the
//! command line's exit 2.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of every archive: not text, so a text-mode transfer that mangles line
/// ends is caught at once.
pub const MAGIC: &[u8; 8] = b"\x89TNTCTL\n";

/// The format version this build writes and reads.
pub const FORMAT: u32 = 1;

/// The largest `D` payload the writer produces; a reader refuses anything above
/// [`MAX_RECORD`].
pub const CHUNK: usize = 256 * 1024;

/// The largest record a reader accepts (a manifest of many tables is the biggest).
pub const MAX_RECORD: u32 = 64 * 1024 * 1024;

/// zstd's level for archives. Level 1 is the fastest and, on COPY data (binary row
/// framing around text and numbers), smaller than levels 3 to 12 as well.
pub const LEVEL: i32 = 1;

/// What an archive says about itself, its tenant and its tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The program and version that wrote it.
    pub written_by: String,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The tenant it was taken from.
    pub source: Source,
    /// The PostgreSQL server's `server_version_num`.
    pub server_version_num: i32,
    /// The highest applied migration, or `None` when nothing is applied.
    pub revision: Option<i32>,
    /// Every applied migration with the checksum the tenant's history records.
    pub migrations: Vec<ArchivedMigration>,
    /// Every table whose rows are carried, in the order their rows follow.
    pub tables: Vec<Table>,
    /// Every sequence of the schema with its state.
    pub sequences: Vec<Sequence>,
    /// Materialized views that are refreshed after loading (their rows are not carried).
    pub materialized_views: Vec<String>,
}

/// The tenant an archive was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Its domain.
    pub domain: String,
    /// Its display name.
    pub tenant_name: String,
    /// Its type.
    pub tenant_type: String,
    /// Its schema.
    pub schema_name: String,
    /// The server it was on.
    pub server: String,
}

/// An applied migration as the source's history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchivedMigration {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: String,
    /// refinery's checksum, as a decimal string (it is a `u64`).
    pub checksum: String,
}

/// The COPY format a table's rows are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CopyFormat {
    /// PostgreSQL's binary COPY format.
    Binary,
    /// PostgreSQL's text COPY format: for tables with a column whose binary form names
    /// type OIDs (arrays of the schema's own types, composite types), which differ
    /// between databases.
    Text,
}

/// One table whose rows an archive carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The table's name in the schema.
    pub name: String,
    /// The columns whose values are carried, in COPY order (generated columns are not:
    /// loading recomputes them).
    pub columns: Vec<Column>,
    /// Generated columns, recomputed on load.
    pub generated: Vec<String>,
    /// Its rows' format.
    pub format: CopyFormat,
    /// Its row count in the snapshot.
    pub rows: u64,
}

/// A carried column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type as `format_type` spells it.
    #[serde(rename = "type")]
    pub type_name: String,
}

/// A sequence's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    /// The sequence's name in the schema.
    pub name: String,
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`.
    pub is_called: bool,
}

impl Manifest {
    /// The total of the tables' row counts.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not an archive at all.
    #[error("not a tenantctl archive (it does not start with the archive's magic bytes)")]
    NotAnArchive,
    /// Written in a format version this build does not read.
    #[error("archive format version {0} is not supported (this tenantctl reads version {FORMAT}); use the tenantctl that wrote it, or a newer one")]
    Version(u32),
    /// It ends before its last record.
    #[error("the archive is truncated: it ends before its checksum record")]
    Truncated,
    /// The content does not match its checksum, or its structure is broken.
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
}

impl ArchiveError {
    fn from_read(e: io::Error) -> ArchiveError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ArchiveError::Truncated,
            // zstd reports a damaged frame (bad block, checksum) as InvalidData or Other.
            io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                ArchiveError::Corrupt(format!("its compressed stream does not decode ({e})"))
            }
            _ => ArchiveError::Io(e),
        }
    }
}

/// Writes an archive, record by record.
pub struct Writer<W: Write> {
    out: zstd::stream::write::Encoder<'static, W>,
    hash: Sha256,
    tables: usize,
    /// The table whose rows are being written, and the tables already closed.
    next_table: usize,
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `out` with its manifest.
    pub fn new(mut out: W, manifest: &Manifest) -> Result<Writer<W>, ArchiveError> {
        out.write_all(MAGIC)?;
        let mut encoder = zstd::stream::write::Encoder::new(out, LEVEL)?;
        encoder.include_checksum(true)?;
        let mut w = Writer {
            out: encoder,
            hash: Sha256::new(),
            tables: manifest.tables.len(),
            next_table: 0,
        };
        let json = serde_json::to_vec(manifest)
            .map_err(|e| ArchiveError::Corrupt(format!("manifest: {e}")))?;
        w.record(b'M', &[&json])?;
        Ok(w)
    }

    fn record(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), ArchiveError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| ArchiveError::Corrupt(format!("record of {len} bytes is too big")))?;
        let head = [&[tag][..], &len.to_be_bytes()[..]].concat();
        self.hash.update(&head);
        self.out.write_all(&head)?;
        for p in parts {
            self.hash.update(p);
            self.out.write_all(p)?;
        }
        Ok(())
    }

    /// Writes a piece of table `table`'s rows (any length; split into records here).
    pub fn rows(&mut self, table: usize, data: &[u8]) -> Result<(), ArchiveError> {
        self.expect_table(table)?;
        let index = (table as u32).to_be_bytes();
        for piece in data.chunks(CHUNK) {
            self.record(b'D', &[&index, piece])?;
        }
        Ok(())
    }

    /// Closes table `table` with its row count.
    pub fn end_table(&mut self, table: usize, rows: u64) -> Result<(), ArchiveError> {
        self.expect_table(table)?;
        self.record(b'E', &[&(table as u32).to_be_bytes(), &rows.to_be_bytes()])?;
        self.next_table += 1;
        Ok(())
    }

    fn expect_table(&self, table: usize) -> Result<(), ArchiveError> {
        if table != self.next_table || table >= self.tables {
            return Err(ArchiveError::Corrupt(format!(
                "table {table} written out of order (expected {})",
                self.next_table
            )));
        }
        Ok(())
    }

    /// Writes the checksum record and ends the stream; returns the underlying writer.
    pub fn finish(mut self) -> Result<W, ArchiveError> {
        if self.next_table != self.tables {
            return Err(ArchiveError::Corrupt(format!(
                "only {} of {} tables were written",
                self.next_table, self.tables
            )));
        }
        let digest = self.hash.clone().finalize();
        let head = [&[b'Z'][..], &(digest.len() as u32).to_be_bytes()[..]].concat();
        self.out.write_all(&head)?;
        self.out.write_all(&digest)?;
        let mut inner = self.out.finish()?;
        inner.flush()?;
        Ok(inner)
    }
}

/// One item read from an archive after its manifest.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A piece of table `table`'s rows.
    Rows {
        /// The table's index in the manifest.
        table: usize,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The end of table `table`'s rows, with the count the writer recorded.
    End {
        /// The table's index in the manifest.
        table: usize,
        /// Its row count.
        rows: u64,
    },
    /// The checksum matched and nothing follows: the archive is whole.
    Done,
}

/// Reads an archive, checking its structure and checksum as it goes.
pub struct Reader<R: Read> {
    input: zstd::stream::read::Decoder<'static, io::BufReader<R>>,
    hash: Sha256,
    manifest: Manifest,
    /// The table whose rows come next.
    next_table: usize,
    done: bool,
    /// The checksum record's SHA-256, in hex, once it has been read and matched.
    checksum: Option<String>,
}

impl<R: Read> Reader<R> {
    /// Opens an archive: checks its magic bytes and format version and reads its
    /// manifest.
    pub fn open(mut input: R) -> Result<Reader<R>, ArchiveError> {
        let mut magic = [0u8; 8];
        let mut got = 0;
        while got < magic.len() {
            match input.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::Io(e)),
            }
        }
        if got < magic.len() || &magic != MAGIC {
            return Err(ArchiveError::NotAnArchive);
        }
        // One zstd frame and nothing else: a skippable frame (before the data or after
        // it) or a second frame would be bytes no checksum covers.
        let decoder = zstd::stream::read::Decoder::new(input)
            .map_err(ArchiveError::from_read)?
            .single_frame();
        let mut r = Reader {
            input: decoder,
            hash: Sha256::new(),
            manifest: empty_manifest(),
            next_table: 0,
            done: false,
            checksum: None,
        };
        let (tag, payload) = r.record()?;
        if tag != b'M' {
            return Err(ArchiveError::Corrupt(
                "it does not start with a manifest".into(),
            ));
        }
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version = serde_json::from_slice(&payload)
            .map_err(|e| ArchiveError::Corrupt(format!("its manifest is not readable: {e}")))?;
        if version.format != FORMAT {
            return Err(ArchiveError::Version(version.format));
        }
        r.manifest = serde_json::from_slice(&payload)
            .map_err(|e| ArchiveError::Corrupt(format!("its manifest is not readable: {e}")))?;
        Ok(r)
    }

    /// The archive's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The SHA-256 of the archive's records (what its checksum record holds), in hex:
    /// known once the whole archive has been read and that record matched
    /// ([`Item::Done`]). Two archives with the same checksum carry the same data.
    pub fn checksum(&self) -> Option<&str> {
        self.checksum.as_deref()
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ArchiveError> {
        self.input.read_exact(buf).map_err(ArchiveError::from_read)
    }

    /// Reads one record (tag and payload) and adds it to the running checksum.
    fn record(&mut self) -> Result<(u8, Vec<u8>), ArchiveError> {
        let mut head = [0u8; 5];
        self.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_RECORD {
            return Err(ArchiveError::Corrupt(format!(
                "a record claims {len} bytes, more than any archive holds"
            )));
        }
        let mut payload = vec![0u8; len as usize];
        self.read_exact(&mut payload)?;
        if head[0] != b'Z' {
            self.hash.update(head);
            self.hash.update(&payload);
        }
        Ok((head[0], payload))
    }

    /// The next item; after [`Item::Done`], always `Done` again.
    pub fn next_item(&mut self) -> Result<Item, ArchiveError> {
        if self.done {
            return Ok(Item::Done);
        }
        let (tag, payload) = self.record()?;
        let tables = self.manifest.tables.len();
        let index = |payload: &[u8]| -> Result<usize, ArchiveError> {
            let bytes: [u8; 4] = payload
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ArchiveError::Corrupt("a record is too short".into()))?;
            Ok(u32::from_be_bytes(bytes) as usize)
        };
        match tag {
            b'D' | b'E' => {
                let table = index(&payload)?;
                if table != self.next_table || table >= tables {
                    return Err(ArchiveError::Corrupt(format!(
                        "rows of table {table} where table {} was expected",
                        self.next_table
                    )));
                }
                if tag == b'D' {
                    let mut data = payload;
                    data.drain(..4);
                    return Ok(Item::Rows { table, data });
                }
                let rows: [u8; 8] = payload
                    .get(4..12)
                    .and_then(|b| b.try_into().ok())
                    .filter(|_| payload.len() == 12)
                    .ok_or_else(|| {
                        ArchiveError::Corrupt("a table's end record is malformed".into())
                    })?;
                self.next_table += 1;
                Ok(Item::End {
                    table,
                    rows: u64::from_be_bytes(rows),
                })
            }
            b'Z' => {
                if self.next_table != tables {
                    return Err(ArchiveError::Corrupt(format!(
                        "it ends after {} of its {tables} tables",
                        self.next_table
                    )));
                }
                let digest = self.hash.clone().finalize();
                if payload.as_slice() != digest.as_slice() {
                    return Err(ArchiveError::Corrupt(
                        "its content does not match its SHA-256 checksum".into(),
                    ));
                }
                // Nothing may follow, in the stream or after it.
                let mut rest = [0u8; 1];
                match self.input.read(&mut rest) {
                    Ok(0) => {}
                    Ok(_) => {
                        return Err(ArchiveError::Corrupt(
                            "bytes follow its checksum record".into(),
                        ))
                    }
                    Err(e) => return Err(ArchiveError::from_read(e)),
                }
                let inner = self.input.get_mut();
                let mut tail = [0u8; 1];
                match inner.read(&mut tail) {
                    Ok(0) => {}
                    Ok(_) => {
                        return Err(ArchiveError::Corrupt(
                            "bytes follow its compressed stream".into(),
                        ))
                    }
                    Err(e) => return Err(ArchiveError::Io(e)),
                }
                self.done = true;
                self.checksum = Some(hex::encode(digest));
                Ok(Item::Done)
            }
            other => Err(ArchiveError::Corrupt(format!(
                "unknown record type {other:#04x}"
            ))),
        }
    }

    /// Reads the rest of the archive, checking every record and the checksum; returns
    /// the row counts the writer recorded per table, and the checksum
    /// ([`Reader::checksum`]).
    pub fn verify(mut self) -> Result<(Manifest, Vec<u64>, String), ArchiveError> {
        let mut counts = Vec::with_capacity(self.manifest.tables.len());
        loop {
            match self.next_item()? {
                Item::Rows { .. } => {}
                Item::End { table, rows } => {
                    if rows != self.manifest.tables[table].rows {
                        return Err(ArchiveError::Corrupt(format!(
                            "table {} holds {rows} rows but its manifest says {}",
                            self.manifest.tables[table].name, self.manifest.tables[table].rows
                        )));
                    }
                    counts.push(rows)
                }
                Item::Done => {
                    let checksum = self.checksum.take().unwrap_or_default();
                    return Ok((self.manifest, counts, checksum));
                }
            }
        }
    }
}

/// A manifest with nothing in it (filled in by the caller).
pub fn empty_manifest() -> Manifest {
    Manifest {
        format: FORMAT,
        written_by: String::new(),
        created_at: String::new(),
        source: Source {
            domain: String::new(),
            tenant_name: String::new(),
            tenant_type: String::new(),
            schema_name: String::new(),
            server: String::new(),
        },
        server_version_num: 0,
        revision: None,
        migrations: Vec::new(),
        tables: Vec::new(),
        sequences: Vec::new(),
        materialized_views: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tables: &[(&str, u64)]) -> Manifest {
        let mut m = empty_manifest();
        m.written_by = "tenantctl test".into();
        m.tables = tables
            .iter()
            .map(|(name, rows)| Table {
                name: name.to_string(),
                columns: vec![Column {
                    name: "id".into(),
                    type_name: "bigint".into(),
                }],
                generated: vec![],
                format: CopyFormat::Binary,
                rows: *rows,
            })
            .collect();
        m
    }

    fn archive(m: &Manifest, rows: &[&[u8]]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), m).unwrap();
        for (i, data) in rows.iter().enumerate() {
            w.rows(i, data).unwrap();
            w.end_table(i, m.tables[i].rows).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_returns_every_byte_in_order() {
        let m = manifest(&[("a", 2), ("b", 0)]);
        let big = vec![7u8; CHUNK * 2 + 10];
        let bytes = archive(&m, &[&big, b""]);
        let mut r = Reader::open(&bytes[..]).unwrap();
        assert_eq!(r.manifest(), &m);
        let mut got = Vec::new();
        loop {
            match r.next_item().unwrap() {
                Item::Rows { table, data } => {
                    assert_eq!(table, 0);
                    got.extend(data)
                }
                Item::End { table, rows } => assert_eq!(rows, m.tables[table].rows),
                Item::Done => break,
            }
        }
        assert_eq!(got, big);
        assert_eq!(
            Reader::open(&bytes[..]).unwrap().verify().unwrap().1,
            vec![2, 0]
        );
    }

    #[test]
    fn the_checksum_names_the_content() {
        let m = manifest(&[("a", 1)]);
        let sum = |rows: &[u8]| {
            let bytes = archive(&m, &[rows]);
            let (_, _, from_verify) = Reader::open(&bytes[..]).unwrap().verify().unwrap();
            let mut r = Reader::open(&bytes[..]).unwrap();
            assert_eq!(r.checksum(), None, "known before the end");
            while r.next_item().unwrap() != Item::Done {}
            assert_eq!(r.checksum(), Some(from_verify.as_str()));
            from_verify
        };
        assert_eq!(sum(b"some rows"), sum(b"some rows"));
        assert_ne!(sum(b"some rows"), sum(b"some rowz"));
        assert_eq!(sum(b"x").len(), 64);
    }

    #[test]
    fn truncation_anywhere_is_refused() {
        let m = manifest(&[("a", 1)]);
        let bytes = archive(&m, &[&[1u8; 5000]]);
        for cut in [0, 3, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let result = Reader::open(&bytes[..cut]).and_then(|r| r.verify());
            assert!(result.is_err(), "a cut at {cut} was accepted");
        }
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let m = manifest(&[("a", 1)]);
        let bytes = archive(&m, &[b"some rows"]);
        let content = |b: &[u8]| -> Result<Vec<u8>, ArchiveError> {
            let mut r = Reader::open(b)?;
            let mut got = serde_json::to_vec(r.manifest()).unwrap();
            loop {
                match r.next_item()? {
                    Item::Rows { data, .. } => got.extend(data),
                    Item::End { rows, .. } => got.extend(rows.to_be_bytes()),
                    Item::Done => return Ok(got),
                }
            }
        };
        let original = content(&bytes).unwrap();
        let mut refused = 0;
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            // A changed byte is refused, or (a zstd header field such as the window size
            // that does not change what decodes) yields exactly the same content.
            match content(&bad) {
                Err(_) => refused += 1,
                Ok(got) => assert_eq!(got, original, "a changed byte at {at} changed the content"),
            }
        }
        assert!(
            refused >= bytes.len() - 2,
            "only {refused} of {} changes refused",
            bytes.len()
        );
    }

    #[test]
    fn trailing_bytes_and_foreign_files_are_refused() {
        let m = manifest(&[]);
        let mut bytes = archive(&m, &[]);
        bytes.push(0);
        assert!(matches!(
            Reader::open(&bytes[..]).and_then(|r| r.verify()),
            Err(ArchiveError::Corrupt(_))
        ));
        assert!(matches!(
            Reader::open(&b"PGDMP\x01\x0e\x00 custom dump"[..]),
            Err(ArchiveError::NotAnArchive)
        ));
    }

    #[test]
    fn frames_beside_the_one_stream_are_refused() {
        let m = manifest(&[("a", 1)]);
        let bytes = archive(&m, &[b"some rows"]);
        // A skippable frame (magic 0x184D2A50, then its length), full of bytes no
        // checksum covers; an empty zstd frame.
        let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
        skippable.extend_from_slice(&100u32.to_le_bytes());
        skippable.extend_from_slice(&[b'X'; 100]);
        let empty = zstd::stream::encode_all(&[][..], 1).unwrap();
        let after = [bytes.clone(), skippable.clone()].concat();
        let before = [&bytes[..8], &skippable[..], &bytes[8..]].concat();
        let empty_after = [bytes.clone(), empty].concat();
        for (what, damaged) in [
            ("a skippable frame after the stream", after),
            ("a skippable frame before it", before),
            ("an empty frame after it", empty_after),
        ] {
            assert!(
                Reader::open(&damaged[..]).and_then(|r| r.verify()).is_err(),
                "{what} was accepted"
            );
        }
        assert!(Reader::open(&bytes[..]).and_then(|r| r.verify()).is_ok());
    }

    #[test]
    fn the_writer_keeps_tables_in_order() {
        let m = manifest(&[("a", 0), ("b", 0)]);
        let mut w = Writer::new(Vec::new(), &m).unwrap();
        assert!(w.rows(1, b"x").is_err());
        w.end_table(0, 0).unwrap();
        assert!(w.finish().is_err());
    }
}
