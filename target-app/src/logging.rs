//! JSON-lines logging to stderr and, optionally, an appended log file.
//!
//! Each event is formatted into one buffer by tracing-subscriber and handed to
//! [`LineWriter`] in a single `write`; the writer holds one mutex while writing that buffer
//! to both sinks, so lines from concurrent tasks never interleave. Fields are flattened to
//! the top level so a line reads `{"level":"ERROR","code":"DB_POOL_TIMEOUT",...}`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Writes every formatted event to stderr and to the optional file, under one lock.
#[derive(Clone)]
pub struct LineWriter {
    file: Arc<Mutex<Option<File>>>,
}

impl LineWriter {
    /// A writer appending to `path` (created if missing) as well as stderr.
    pub fn with_file(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LineWriter {
            file: Arc::new(Mutex::new(Some(file))),
        })
    }

    /// A writer to stderr only.
    pub fn stderr_only() -> Self {
        LineWriter {
            file: Arc::new(Mutex::new(None)),
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A poisoned lock only means another thread panicked mid-write; keep logging.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = io::stderr().lock().write_all(buf);
        if let Some(file) = file.as_mut() {
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global JSON subscriber at `level` (trace, debug, info, warn, error).
/// A second call in the same process is a no-op (tests build several apps).
pub fn init(level: &str, writer: LineWriter) {
    // sqlx logs every statement at info; keep that at warn unless the operator asks for
    // debug, so the log stays about the shop and not about its driver.
    let directives = match level {
        "trace" | "debug" => level.to_owned(),
        _ => format!("{level},sqlx=warn"),
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}
