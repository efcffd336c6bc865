//! A Project-W result read from its body as it arrives, with memory
//! bounded whatever its size: each transcript format is streamed into a
//! file of the job (a chunk at a time, see `files`), `as_json` re-written
//! compactly on its way, and the whole checked against the protocol's
//! shape: exactly one of `error_msg` and `transcript`, a transcript with
//! its five formats, no other field. A result that fails anywhere leaves
//! no file behind.
//!
//! The JSON is read by `struson` (a streaming reader: strings are read
//! piecewise, not whole) on a blocking thread, fed through a small channel
//! by the request's task, which keeps the body's limits: size
//! (`jobs.max_result_bytes`), idle time and deadline. Member names and
//! numbers are read whole (numbers are at most 100 characters; a name at
//! most the body limit).

use std::io::{BufWriter, Read, Write};

use bytes::Bytes;
use futures_util::Stream;
use struson::reader::{JsonReader, JsonStreamReader, ReaderError, ReaderSettings, TransferError, ValueType};
use struson::writer::{JsonStreamWriter, JsonWriter};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use warden_events::job::FileRef;

use crate::domain::job::MachineRef;
use crate::fleet::files::{FileError, Limits, NewFile, Origin, TimedBody};
use crate::fleet::jobs::JobView;
use crate::platform::db::Database;

/// The transcript formats: member name, file extension, media type.
pub const FORMATS: [(&str, &str, &str); 5] = [
    ("as_txt", "txt", "text/plain"),
    ("as_srt", "srt", "application/x-subrip"),
    ("as_tsv", "tsv", "text/tab-separated-values"),
    ("as_vtt", "vtt", "text/vtt"),
    ("as_json", "json", "application/json"),
];

/// Longest `error_msg` kept (it goes into the log, sealed).
const MAX_ERROR_MESSAGE: u64 = 64 * 1024;

/// A Project-W result.
#[derive(Debug)]
pub enum ProjectWResult {
    /// `{"error_msg": ...}`: the job failed (or was aborted).
    Failed { error_msg: String },
    /// `{"transcript": {...}}`: each format, stored as a file of the job.
    Transcript { files: Vec<(&'static str, FileRef)> },
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("the result is larger than jobs.max_result_bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("the result is not valid JSON: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    File(#[from] FileError),
}

impl From<ReaderError> for ResultError {
    fn from(error: ReaderError) -> Self {
        match error {
            ReaderError::SyntaxError(_) | ReaderError::IoError { .. } => ResultError::Malformed(error.to_string()),
            other => ResultError::Invalid(other.to_string()),
        }
    }
}

/// Reads a Project-W result of `job` (run by `machine`) from `body`.
pub async fn read<S, E>(
    db: &Database,
    job: &JobView,
    machine: MachineRef,
    body: S,
    limits: Limits,
    max_bytes: usize,
) -> Result<ProjectWResult, ResultError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let sink = Sink {
        handle: Handle::current(),
        db: db.clone(),
        owner_id: job.submitted_by,
        base_name: format!("job-{}", job.number.unwrap_or(0)),
        origin: Origin::Result {
            job_id: job.id,
            machine,
        },
        limits,
    };
    let parser = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            receiver,
            current: Bytes::new(),
        };
        sink.parse(&mut reader)
    });
    let pumped = async {
        let mut body = TimedBody::new(body, &limits);
        let mut total = 0usize;
        while let Some(piece) = body.next().await? {
            total += piece.len();
            if total > max_bytes {
                return Err(ResultError::TooLarge(max_bytes));
            }
            if sender.send(piece).await.is_err() {
                // The parser stopped (an error it reports).
                break;
            }
        }
        Ok(())
    }
    .await;
    // The parser sees the end of the body (or its breaking off).
    drop(sender);
    let parsed = parser
        .await
        .map_err(|error| ResultError::Invalid(format!("the result could not be read: {error}")))?;
    match (pumped, parsed) {
        (Ok(()), parsed) => parsed,
        (Err(error), Ok(result)) => {
            if let ProjectWResult::Transcript { files } = result {
                for (_, file) in files {
                    crate::fleet::files::remove_file(db, file.file_id).await;
                }
            }
            Err(error)
        }
        (Err(error), Err(_)) => Err(error),
    }
}

/// The body's bytes as a blocking reader, as the request's task sends them.
struct ChannelReader {
    receiver: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(piece) => self.current = piece,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Where the parsed formats go: files of the job's submitter.
struct Sink {
    handle: Handle,
    db: Database,
    owner_id: uuid::Uuid,
    base_name: String,
    origin: Origin,
    limits: Limits,
}

/// A file being written from the blocking thread.
struct BlockingFile<'a> {
    handle: &'a Handle,
    file: NewFile,
}

impl Write for BlockingFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.handle
            .block_on(self.file.write(buf))
            .map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn parse(&self, reader: &mut impl Read) -> Result<ProjectWResult, ResultError> {
        let mut stored: Vec<(&'static str, FileRef)> = Vec::new();
        let outcome = self.parse_into(reader, &mut stored);
        if outcome.is_err() {
            for (_, file) in &stored {
                self.handle
                    .block_on(crate::fleet::files::remove_file(&self.db, file.file_id));
            }
        }
        outcome
    }

    fn parse_into(
        &self,
        reader: &mut impl Read,
        stored: &mut Vec<(&'static str, FileRef)>,
    ) -> Result<ProjectWResult, ResultError> {
        let settings = ReaderSettings {
            track_path: false,
            max_nesting_depth: Some(64),
            ..ReaderSettings::default()
        };
        let mut json = JsonStreamReader::new_custom(reader, settings);
        json.begin_object()?;
        let mut error_msg: Option<Option<String>> = None;
        let mut transcript: Option<bool> = None;
        while json.has_next()? {
            let name = json.next_name_owned()?;
            match name.as_str() {
                "error_msg" if error_msg.is_none() => {
                    error_msg = Some(match json.peek()? {
                        ValueType::Null => {
                            json.next_null()?;
                            None
                        }
                        _ => Some(read_short_string(&mut json)?),
                    });
                }
                "transcript" if transcript.is_none() => {
                    transcript = Some(match json.peek()? {
                        ValueType::Null => {
                            json.next_null()?;
                            false
                        }
                        _ => {
                            self.parse_transcript(&mut json, stored)?;
                            true
                        }
                    });
                }
                "error_msg" | "transcript" => {
                    return Err(ResultError::Invalid(format!("`{name}` is given twice")));
                }
                other => {
                    return Err(ResultError::Invalid(format!(
                        "unknown field `{}`: send error_msg or transcript",
                        other.chars().take(40).collect::<String>()
                    )))
                }
            }
        }
        json.end_object()?;
        json.consume_trailing_whitespace()?;
        match (error_msg.flatten(), transcript.unwrap_or(false)) {
            (Some(error_msg), false) => Ok(ProjectWResult::Failed { error_msg }),
            (None, true) => Ok(ProjectWResult::Transcript {
                files: std::mem::take(stored),
            }),
            _ => Err(ResultError::Invalid(
                "send exactly one of error_msg and transcript".into(),
            )),
        }
    }

    fn parse_transcript<R: Read>(
        &self,
        json: &mut JsonStreamReader<R>,
        stored: &mut Vec<(&'static str, FileRef)>,
    ) -> Result<(), ResultError> {
        json.begin_object()?;
        while json.has_next()? {
            let name = json.next_name_owned()?;
            let Some(&(key, extension, media_type)) = FORMATS.iter().find(|(key, _, _)| *key == name) else {
                return Err(ResultError::Invalid(format!(
                    "unknown transcript format `{}`",
                    name.chars().take(40).collect::<String>()
                )));
            };
            if stored.iter().any(|(done, _)| *done == key) {
                return Err(ResultError::Invalid(format!("`{key}` is given twice")));
            }
            let file = self.handle.block_on(NewFile::begin(
                &self.db,
                self.owner_id,
                Some(format!("{}.{extension}", self.base_name)),
                media_type,
                self.origin,
                self.limits,
                None,
            ))?;
            let mut out = BufWriter::with_capacity(
                256 * 1024,
                BlockingFile {
                    handle: &self.handle,
                    file,
                },
            );
            let written = if key == "as_json" {
                // Any JSON value, re-written compactly as it streams by.
                let mut writer = JsonStreamWriter::new(&mut out);
                json.transfer_to(&mut writer)
                    .map_err(|error| match error {
                        TransferError::ReaderError(error) => ResultError::from(error),
                        TransferError::WriterError(error) => file_failure(error),
                    })
                    .and_then(|()| writer.finish_document().map(|_| ()).map_err(file_failure))
            } else {
                if json.peek()? != ValueType::String {
                    return Err(ResultError::Invalid(format!("`{key}` must be a string")));
                }
                let mut text = json.next_string_reader()?;
                std::io::copy(&mut text, &mut out).map(|_| ()).map_err(file_failure)
            };
            let file = out.into_inner().map_err(|error| file_failure(error.into_error()))?.file;
            match written {
                Ok(()) => {
                    let reference = self.handle.block_on(file.finish())?;
                    stored.push((key, reference));
                }
                Err(error) => {
                    self.handle.block_on(file.abandon());
                    return Err(error);
                }
            }
        }
        json.end_object()?;
        if stored.len() != FORMATS.len() {
            let missing: Vec<&str> = FORMATS
                .iter()
                .map(|(key, _, _)| *key)
                .filter(|key| !stored.iter().any(|(done, _)| done == key))
                .collect();
            return Err(ResultError::Invalid(format!(
                "the transcript lacks {}",
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

/// An I/O error while copying a value: storing it failed (a
/// [`FileError`]), or reading it did (the JSON broke off or is not valid).
fn file_failure(error: std::io::Error) -> ResultError {
    match error.downcast::<FileError>() {
        Ok(error) => ResultError::File(error),
        Err(error) => ResultError::Malformed(error.to_string()),
    }
}

/// A string value of at most [`MAX_ERROR_MESSAGE`] bytes, without NUL
/// (it is kept in the log and the jobs table).
fn read_short_string<R: Read>(json: &mut JsonStreamReader<R>) -> Result<String, ResultError> {
    if json.peek()? != ValueType::String {
        return Err(ResultError::Invalid("error_msg must be a string or null".into()));
    }
    let mut text = String::new();
    json.next_string_reader()?
        .take(MAX_ERROR_MESSAGE + 1)
        .read_to_string(&mut text)
        .map_err(|error| ResultError::Malformed(error.to_string()))?;
    if text.len() as u64 > MAX_ERROR_MESSAGE {
        return Err(ResultError::Invalid(format!(
            "error_msg is longer than {MAX_ERROR_MESSAGE} bytes"
        )));
    }
    if text.contains('\0') {
        return Err(ResultError::Invalid("error_msg must not contain NUL characters".into()));
    }
    Ok(text)
}
