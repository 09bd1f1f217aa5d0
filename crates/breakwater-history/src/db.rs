//! The state dir's SQLite file: a versioned schema, batched writes on a thread of its own,
//! retention, and what a restart reads back.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

/// The schema this version writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;
/// The file in the state dir.
pub const FILE_NAME: &str = "breakwater.db";
/// Writes waiting for the writer thread at most; beyond, they are counted and dropped.
const QUEUE: usize = 8_192;
/// Writes made in one transaction at most.
const BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS minutes (
    kind TEXT NOT NULL, name TEXT NOT NULL, minute INTEGER NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (kind, name, minute));
CREATE TABLE IF NOT EXISTS transitions (
    at INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_at ON transitions (at);
CREATE TABLE IF NOT EXISTS probe_runs (
    at INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS probe_runs_at ON probe_runs (at);
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY, at INTEGER NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    kind TEXT NOT NULL, name TEXT NOT NULL, at INTEGER NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, circuit TEXT NOT NULL, key TEXT, at INTEGER NOT NULL,
    request BLOB NOT NULL, bytes INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS queue_key ON queue (circuit, key) WHERE key IS NOT NULL;
";

/// One write for the writer thread.
#[derive(Debug)]
pub(crate) enum Write {
    Minute {
        kind: &'static str,
        name: String,
        minute: u64,
        json: String,
    },
    Transition {
        at: u64,
        json: String,
    },
    ProbeRun {
        at: u64,
        json: String,
    },
    Alert {
        key: String,
        at: u64,
        json: String,
    },
    Change {
        kind: String,
        name: String,
        at: u64,
        json: String,
    },
    /// Deletes history older than `before` (ms since the epoch).
    Cleanup {
        before: u64,
    },
    /// Answers once every write before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Writes what came before, closes the file and answers; later writes are dropped.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// What a restart reads back.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) minutes: Vec<(String, String, String)>,
    pub(crate) transitions: Vec<String>,
    pub(crate) probe_runs: Vec<String>,
    pub(crate) alerts: Vec<String>,
    pub(crate) changes: Vec<(String, String, String)>,
}

/// The state of the store, for its health check.
#[derive(Debug, Default)]
pub(crate) struct DbStatus {
    /// Why the store is not in use, or its latest write failed.
    pub(crate) problem: Option<String>,
    pub(crate) written: u64,
    pub(crate) dropped: u64,
}

pub(crate) type Status = Arc<Mutex<DbStatus>>;

/// Opens (creating it if needed) the store in `dir`, checks it, and reads back what is there
/// since `since`.
pub(crate) fn open(dir: &Path, since: u64) -> Result<(Connection, Loaded), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path: PathBuf = dir.join(FILE_NAME);
    let conn =
        Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let setup = || -> rusqlite::Result<i64> {
        conn.busy_timeout(std::time::Duration::ZERO)?;
        // One process per state dir: a second one is refused (locked), never interleaved.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
            .and_then(|ok| {
                if ok == "ok" {
                    Ok(())
                } else {
                    Err(rusqlite::Error::InvalidQuery)
                }
            })?;
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    };
    let version = setup().map_err(|e| format!("{}: {e}", path.display()))?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "{} has schema version {version}, newer than this build's {SCHEMA_VERSION}",
            path.display()
        ));
    }
    conn.execute_batch(SCHEMA)
        .and_then(|()| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let loaded = load(&conn, since).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((conn, loaded))
}

fn load(conn: &Connection, since: u64) -> rusqlite::Result<Loaded> {
    let since = since as i64;
    let mut loaded = Loaded::default();
    let mut q =
        conn.prepare("SELECT kind, name, json FROM minutes WHERE minute >= ?1 ORDER BY minute")?;
    loaded.minutes = q
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut q = conn.prepare("SELECT json FROM transitions WHERE at >= ?1 ORDER BY at")?;
    loaded.transitions = q
        .query_map([since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut q = conn.prepare("SELECT json FROM probe_runs WHERE at >= ?1 ORDER BY at")?;
    loaded.probe_runs = q
        .query_map([since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut q = conn.prepare("SELECT json FROM alerts WHERE at >= ?1 ORDER BY at")?;
    loaded.alerts = q
        .query_map([since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut q = conn.prepare("SELECT kind, name, json FROM changes ORDER BY at")?;
    loaded.changes = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(loaded)
}

/// The sending side of the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: SyncSender<Write>,
    status: Status,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(conn: Connection, status: Status) -> Writer {
        let (tx, rx) = sync_channel(QUEUE);
        let s = status.clone();
        std::thread::Builder::new()
            .name("breakwater-history".into())
            .spawn(move || write_all(conn, rx, s))
            .expect("a thread for the history's writes");
        Writer { tx, status }
    }

    /// Queues `w`, never waiting: a full queue drops it and counts it.
    pub(crate) fn send(&self, w: Write) {
        match self.tx.try_send(w) {
            Ok(()) => {}
            Err(TrySendError::Full(w)) => {
                if let Write::Flush(done) | Write::Close(done) = w {
                    let _ = done.send(());
                }
                lock(&self.status).dropped += 1;
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn lock(s: &Status) -> std::sync::MutexGuard<'_, DbStatus> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_all(mut conn: Connection, rx: Receiver<Write>, status: Status) {
    let mut closing = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let result = (|| -> rusqlite::Result<u64> {
            let tx = conn.transaction()?;
            let mut n = 0;
            for w in batch {
                n += 1;
                match w {
                    Write::Minute {
                        kind,
                        name,
                        minute,
                        json,
                    } => {
                        tx.execute(
                            "INSERT OR REPLACE INTO minutes (kind, name, minute, json) VALUES (?1, ?2, ?3, ?4)",
                            params![kind, name, minute as i64, json],
                        )?;
                    }
                    Write::Transition { at, json } => {
                        tx.execute(
                            "INSERT INTO transitions (at, json) VALUES (?1, ?2)",
                            params![at as i64, json],
                        )?;
                    }
                    Write::ProbeRun { at, json } => {
                        tx.execute(
                            "INSERT INTO probe_runs (at, json) VALUES (?1, ?2)",
                            params![at as i64, json],
                        )?;
                    }
                    Write::Alert { key, at, json } => {
                        tx.execute(
                            "INSERT OR REPLACE INTO alerts (key, at, json) VALUES (?1, ?2, ?3)",
                            params![key, at as i64, json],
                        )?;
                    }
                    Write::Change {
                        kind,
                        name,
                        at,
                        json,
                    } => {
                        tx.execute(
                            "INSERT OR REPLACE INTO changes (kind, name, at, json) VALUES (?1, ?2, ?3, ?4)",
                            params![kind, name, at as i64, json],
                        )?;
                    }
                    Write::Cleanup { before } => {
                        let before = before as i64;
                        tx.execute("DELETE FROM minutes WHERE minute < ?1", [before])?;
                        tx.execute("DELETE FROM transitions WHERE at < ?1", [before])?;
                        tx.execute("DELETE FROM probe_runs WHERE at < ?1", [before])?;
                        tx.execute("DELETE FROM alerts WHERE at < ?1", [before])?;
                    }
                    Write::Flush(done) => {
                        n -= 1;
                        flushes.push(done);
                    }
                    Write::Close(done) => {
                        n -= 1;
                        closing = Some(done);
                        break;
                    }
                }
            }
            tx.commit()?;
            Ok(n)
        })();
        {
            let mut s = lock(&status);
            match result {
                Ok(n) => {
                    s.written += n;
                    s.problem = None;
                }
                Err(e) => {
                    tracing::warn!(target: "breakwater", error = %e, "history write failed");
                    s.problem = Some(format!("write failed: {e}"));
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        if let Some(done) = closing {
            drop(conn);
            let _ = done.send(());
            return;
        }
    }
}
