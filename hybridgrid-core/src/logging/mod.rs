//! Structured logging with `tracing`: `console` (logfmt, `level=info
//! msg="worker registered" worker_id=...`) or `json` output, a level that can
//! be changed at run time.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

pub use crate::config::parse_filter;
use crate::config::{LogFormat, LoggingConfig};

mod sink;
use sink::{Sink, Target};

/// The installed subscriber's sink, for [`flush`].
static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// Changes the log level of a running process.
#[derive(Clone)]
pub struct LogHandle {
    inner: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
    current: Arc<Mutex<String>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("level", &self.level())
            .finish()
    }
}

impl LogHandle {
    /// A handle that changes nothing (logging was set up elsewhere).
    pub fn detached() -> Self {
        LogHandle {
            inner: None,
            current: Arc::new(Mutex::new("info".into())),
        }
    }

    /// The current level or filter.
    pub fn level(&self) -> String {
        self.current.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sets a new level or filter.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = parse_filter(level)?;
        if let Some(h) = &self.inner {
            h.reload(filter).map_err(|e| e.to_string())?;
        }
        if let Ok(mut c) = self.current.lock() {
            *c = level.trim().to_owned();
        }
        Ok(())
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// Bad level.
    #[error("invalid logging.level: {0}")]
    Level(String),
    /// The log file cannot be opened.
    #[error("cannot open log file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A global subscriber was already installed.
    #[error("logging already initialised")]
    AlreadySet,
}

/// Installs the global subscriber for `cfg`, every line written by the
/// thread that logs it (for short-lived commands). Call once per process.
pub fn init(cfg: &LoggingConfig) -> Result<LogHandle, LoggingError> {
    install(cfg, false)
}

/// Installs the global subscriber for a long-running server: lines are
/// written by a writer thread, in batches, except warnings and errors,
/// which are written (after every line before them) before the call that
/// logs them returns. Call [`flush`] before the process exits.
pub fn init_for_server(cfg: &LoggingConfig) -> Result<LogHandle, LoggingError> {
    install(cfg, true)
}

/// Writes every log line logged so far (a server's lines may still wait
/// for its writer thread). Does nothing before logging is installed.
pub fn flush() {
    if let Some(s) = SINK.get() {
        s.flush();
    }
}

fn install(cfg: &LoggingConfig, background: bool) -> Result<LogHandle, LoggingError> {
    let filter = parse_filter(&cfg.level).map_err(LoggingError::Level)?;
    let target = if cfg.file.is_empty() {
        Target::Stderr
    } else {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.file)
            .map_err(|source| LoggingError::File {
                path: cfg.file.clone(),
                source,
            })?;
        Target::File(f)
    };
    let sink = Arc::new(if background {
        Sink::background(target)
    } else {
        Sink::direct(target)
    });
    let (filter_layer, handle) = reload::Layer::new(filter);
    let fmt_layer = tracing_subscriber::fmt::layer()
        .event_format(LineFormat { format: cfg.format })
        .with_writer(LogWriter(Arc::clone(&sink)));
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(fmt_layer)
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)?;
    let _ = SINK.set(sink);
    Ok(LogHandle {
        inner: Some(handle),
        current: Arc::new(Mutex::new(cfg.level.trim().to_owned())),
    })
}

#[derive(Clone)]
struct LogWriter(Arc<Sink>);

/// Collects one formatted line and hands it to the sink when dropped.
#[derive(Debug)]
#[doc(hidden)]
pub struct LineWriter {
    sink: Arc<Sink>,
    buf: Vec<u8>,
    /// A warning or an error: written before the logging call returns.
    urgent: bool,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.push(&self.buf, self.urgent);
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            sink: Arc::clone(&self.0),
            buf: Vec::with_capacity(256),
            urgent: true,
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        let mut w = self.make_writer();
        // ERROR < WARN < INFO in tracing's order (by verbosity).
        w.urgent = *meta.level() <= Level::WARN;
        w
    }
}

/// Formats events as logfmt or JSON lines with `ts`, `level`, `msg` and the
/// event's fields (and those of its spans).
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    /// Console (logfmt) or JSON.
    pub format: LogFormat,
}

fn level_str(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

#[derive(Default)]
struct Fields {
    msg: String,
    fields: Vec<(&'static str, FieldValue)>,
}

enum FieldValue {
    Str(String),
    Num(String),
    Bool(bool),
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let s = format!("{value:?}");
        if field.name() == "message" {
            self.msg = s;
        } else {
            self.fields.push((field.name(), FieldValue::Str(s)));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_owned();
        } else {
            self.fields
                .push((field.name(), FieldValue::Str(value.to_owned())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .push((field.name(), FieldValue::Num(value.to_string())));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .push((field.name(), FieldValue::Num(value.to_string())));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .push((field.name(), FieldValue::Num(format!("{value:.3}"))));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Bool(value)));
    }
}

fn logfmt_value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        out.push_str(v);
    } else {
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Formats one event as a logfmt line (without the trailing newline).
pub fn format_logfmt(ts: &str, level: &Level, msg: &str, fields: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(out, "ts={ts} level={} msg=", level_str(level));
    logfmt_value(&mut out, msg);
    for (k, v) in fields {
        push_field(&mut out, k, v);
    }
    out
}

/// Appends ` key=value` (quoted when needed).
fn push_field(out: &mut String, k: &str, v: &str) {
    out.push(' ');
    out.push_str(k);
    out.push('=');
    logfmt_value(out, v);
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let level = event.metadata().level();
        match self.format {
            LogFormat::Console => {
                let mut out = String::with_capacity(160);
                let _ = write!(out, "ts={ts} level={} msg=", level_str(level));
                logfmt_value(&mut out, &f.msg);
                for (k, v) in &f.fields {
                    let v = match v {
                        FieldValue::Str(s) | FieldValue::Num(s) => s.as_str(),
                        FieldValue::Bool(true) => "true",
                        FieldValue::Bool(false) => "false",
                    };
                    push_field(&mut out, k, v);
                }
                writeln!(writer, "{out}")
            }
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), ts.into());
                obj.insert("level".into(), level_str(level).into());
                obj.insert("msg".into(), f.msg.into());
                obj.insert("target".into(), event.metadata().target().into());
                for (k, v) in f.fields {
                    let v = match v {
                        FieldValue::Str(s) => serde_json::Value::String(s),
                        FieldValue::Num(s) => s
                            .parse::<serde_json::Number>()
                            .map(serde_json::Value::Number)
                            .unwrap_or(serde_json::Value::String(s)),
                        FieldValue::Bool(b) => serde_json::Value::Bool(b),
                    };
                    obj.insert(k.to_owned(), v);
                }
                let line = serde_json::Value::Object(obj).to_string();
                writeln!(writer, "{line}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_quotes_what_needs_it() {
        let l = format_logfmt(
            "T",
            &Level::INFO,
            "worker registered",
            &[
                ("worker_id", "w1"),
                ("arch", "amd64"),
                ("error", "a \"b\"\nc"),
            ],
        );
        assert_eq!(
            l,
            "ts=T level=info msg=\"worker registered\" worker_id=w1 arch=amd64 error=\"a \\\"b\\\"\\nc\""
        );
    }

    #[test]
    fn filters_parse() {
        assert!(parse_filter("debug").is_ok());
        assert!(parse_filter("info,hybridgrid_net=debug").is_ok());
        assert!(parse_filter("").is_err());
        assert!(parse_filter("loud=loud=loud").is_err());
    }
}
