//! Archives on blocking threads, fed from and to async code through bounded channels, so
//! a tenant of any size streams through a few megabytes of memory: [`Sink`] writes one,
//! [`Source`] reads one, [`pipe`] joins an export to an import without a file.

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use crate::data::archive::{ArchiveError, Item, Manifest, Reader, Writer};
use crate::error::{Error, ErrorKind};

/// Pieces in flight between a connection and an archive's thread.
const IN_FLIGHT: usize = 16;

enum Piece {
    Rows(usize, Vec<u8>),
    End(usize, u64),
}

/// An archive being written on its own thread.
pub struct Sink {
    tx: Option<mpsc::Sender<Piece>>,
    done: Option<tokio::task::JoinHandle<Result<(), ArchiveError>>>,
    label: String,
}

impl Sink {
    /// Starts writing an archive with `manifest` to `out`; `label` names it in errors.
    pub fn start(out: Box<dyn Write + Send>, manifest: Manifest, label: &str) -> Sink {
        let (tx, mut rx) = mpsc::channel::<Piece>(IN_FLIGHT);
        let done = tokio::task::spawn_blocking(move || {
            let mut w = Writer::new(io::BufWriter::with_capacity(1 << 16, out), &manifest)?;
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Rows(t, data) => w.rows(t, &data)?,
                    Piece::End(t, rows) => w.end_table(t, rows)?,
                }
            }
            let mut out = w.finish()?;
            out.flush()?;
            let out = out.into_inner().map_err(|e| e.into_error())?;
            drop(out);
            Ok(())
        });
        Sink {
            tx: Some(tx),
            done: Some(done),
            label: label.to_string(),
        }
    }

    async fn send(&mut self, piece: Piece) -> Result<(), Error> {
        let sent = match &self.tx {
            Some(tx) => tx.send(piece).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: its error says why.
        self.tx = None;
        Err(self.result().await.err().unwrap_or_else(|| {
            Error::failed(format!("writing {}: the writer stopped", self.label))
        }))
    }

    /// Writes a piece of a table's rows.
    pub async fn rows(&mut self, table: usize, data: Vec<u8>) -> Result<(), Error> {
        self.send(Piece::Rows(table, data)).await
    }

    /// Closes a table.
    pub async fn end_table(&mut self, table: usize, rows: u64) -> Result<(), Error> {
        self.send(Piece::End(table, rows)).await
    }

    async fn result(&mut self) -> Result<(), Error> {
        let label = &self.label;
        match self.done.take() {
            None => Err(Error::failed(format!(
                "writing {label}: the writer stopped"
            ))),
            Some(done) => match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::failed(format!("writing {label}: {e}"))),
                Err(e) => Err(Error::failed(format!("writing {label}: {e}"))),
            },
        }
    }

    /// Ends the archive with its checksum and flushes it.
    pub async fn finish(mut self) -> Result<(), Error> {
        self.tx = None;
        self.result().await
    }
}

/// The error for a damaged archive: exit 2, nothing changed.
pub fn damaged(label: &str, e: ArchiveError) -> Error {
    match e {
        ArchiveError::Io(e) => Error::usage(format!("cannot read archive {label}: {e}")),
        other => Error::usage(format!("archive {label}: {other}")),
    }
}

/// An archive being read on its own thread.
pub struct Source {
    /// Its manifest.
    pub manifest: Manifest,
    rx: mpsc::Receiver<Result<Item, ArchiveError>>,
    label: String,
    /// Its checksum, set by the reading thread before it hands over [`Item::Done`].
    checksum: Arc<OnceLock<String>>,
    /// The checksum of the same input read whole before this reading started (a regular
    /// file is checked whole first).
    checked: Option<String>,
}

impl Source {
    /// Opens an archive from `input`: its magic bytes, format version and manifest are
    /// checked before this returns. `label` names it in errors.
    pub async fn open(input: Box<dyn Read + Send>, label: &str) -> Result<Source, Error> {
        let (mtx, mrx) = tokio::sync::oneshot::channel();
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let checksum = Arc::new(OnceLock::new());
        let found = checksum.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = match Reader::open(io::BufReader::with_capacity(1 << 16, input)) {
                Ok(r) => r,
                Err(e) => {
                    let _ = mtx.send(Err(e));
                    return;
                }
            };
            if mtx.send(Ok(reader.manifest().clone())).is_err() {
                return;
            }
            loop {
                let item = reader.next_item();
                if let (Ok(Item::Done), Some(sum)) = (&item, reader.checksum()) {
                    let _ = found.set(sum.to_string());
                }
                let last = !matches!(item, Ok(Item::Rows { .. }) | Ok(Item::End { .. }));
                if tx.blocking_send(item).is_err() || last {
                    return;
                }
            }
        });
        let manifest = match mrx.await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(damaged(label, e)),
            Err(_) => {
                return Err(Error::failed(format!(
                    "reading archive {label}: the reader stopped"
                )))
            }
        };
        Ok(Source {
            manifest,
            rx,
            label: label.to_string(),
            checksum,
            checked: None,
        })
    }

    /// Records the checksum of this same input as read whole before (see
    /// [`verify_whole`]).
    pub fn checked_whole(mut self, checksum: String) -> Source {
        self.checked = Some(checksum);
        self
    }

    /// The archive's checksum (the SHA-256 of its records, in hex), once the whole
    /// archive has been read: by this reading, or by the check before it.
    pub fn checksum(&self) -> Option<String> {
        self.checksum
            .get()
            .cloned()
            .or_else(|| self.checked.clone())
    }

    /// The archive's checksum, reading (and checking, without loading) what is left of
    /// it when it is not known yet: standard input is read to its end.
    pub async fn read_through(&mut self) -> Result<String, Error> {
        loop {
            if let Some(sum) = self.checksum() {
                return Ok(sum);
            }
            if self.next().await? == Item::Done {
                return self.checksum().ok_or_else(|| {
                    Error::failed(format!("archive {}: its checksum was not read", self.label))
                });
            }
        }
    }

    /// `e`, or the archive's damage when that is what `e` comes from. A load (or a check
    /// of the manifest) the server or the migration files refused may have been fed a
    /// damaged archive whose damage its reader had not reached yet: a byte changed inside
    /// zstd's stream can decode to other bytes, and the checksums come at the end. A
    /// stream read once (standard input, a clone's export) is then read through, checked
    /// without loading, and its damage is the error (exit 2), as it would have been had
    /// the archive been checked whole first.
    pub async fn blame(&mut self, e: Error) -> Error {
        if !matches!(e.kind(), ErrorKind::Failed | ErrorKind::Setup) {
            return e;
        }
        match self.read_through().await {
            Err(damage) if damage.kind() == ErrorKind::Invalid => damage,
            _ => e,
        }
    }

    /// The next item; a damaged archive is an exit-2 error.
    pub async fn next(&mut self) -> Result<Item, Error> {
        match self.rx.recv().await {
            Some(Ok(item)) => Ok(item),
            Some(Err(e)) => Err(damaged(&self.label, e)),
            None => Err(damaged(&self.label, ArchiveError::Truncated)),
        }
    }

    /// What names the archive in messages.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Reads a whole archive on a blocking thread, checking every record and its checksum,
/// before anything is changed because of it.
pub async fn verify(input: Box<dyn Read + Send>, label: &str) -> Result<Manifest, Error> {
    verify_whole(input, label).await.map(|(m, _)| m)
}

/// [`verify`], also returning the archive's checksum (the SHA-256 of its records, in
/// hex).
pub async fn verify_whole(
    input: Box<dyn Read + Send>,
    label: &str,
) -> Result<(Manifest, String), Error> {
    let result = tokio::task::spawn_blocking(move || {
        Reader::open(io::BufReader::with_capacity(1 << 16, input))?.verify()
    })
    .await
    .map_err(|e| Error::failed(format!("reading archive {label}: {e}")))?;
    result
        .map(|(m, _, checksum)| (m, checksum))
        .map_err(|e| damaged(label, e))
}

/// A bounded in-memory pipe: what is written to the [`PipeWriter`] is read from the
/// [`PipeReader`], so an export feeds an import directly.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
    (
        PipeWriter { tx },
        PipeReader {
            rx,
            buf: Vec::new(),
            at: 0,
        },
    )
}

/// The writing end of [`pipe`].
pub struct PipeWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the import stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end of [`pipe`]; it ends when the writer is dropped.
pub struct PipeReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
