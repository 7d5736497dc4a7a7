//! Arrow batches over the wire: a shard's answer to a fragment as one Arrow IPC stream
//! (schema, batches, end marker), cut into messages of at most `MESSAGE_BYTES`, and read back
//! from such messages however they were cut.

use crate::distributed::BatchStream;
use bytes::Bytes;
use cairn_common::{Error, Result};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::StreamExt;

/// The largest piece of the IPC stream one message carries.
pub const MESSAGE_BYTES: usize = 1 << 20;

fn arrow(e: impl std::fmt::Display) -> Error {
    Error::component("arrow ipc", e)
}

/// `batches` as the pieces of one IPC stream. An error in `batches` ends the pieces with it.
pub fn encode(batches: BatchStream) -> BoxPieces {
    let pieces = futures::stream::unfold(
        (batches, None::<StreamWriter<Vec<u8>>>, false),
        |(mut batches, mut writer, done)| async move {
            if done {
                return None;
            }
            let (out, done) = match batches.next().await {
                Some(Ok(batch)) => {
                    let written = match &mut writer {
                        Some(w) => w.write(&batch),
                        None => {
                            StreamWriter::try_new(Vec::new(), &batch.schema()).and_then(|mut w| {
                                w.write(&batch)?;
                                writer = Some(w);
                                Ok(())
                            })
                        }
                    };
                    match (written, &mut writer) {
                        (Ok(()), Some(w)) => (Ok(std::mem::take(w.get_mut())), false),
                        (Err(e), _) => (Err(arrow(e)), true),
                        (Ok(()), None) => (Err(arrow("no writer")), true),
                    }
                }
                Some(Err(e)) => (Err(e), true),
                // No batch at all: nothing to describe, and the reader takes no bytes as none.
                None => match &mut writer {
                    None => return None,
                    Some(w) => match w.finish() {
                        Ok(()) => (Ok(std::mem::take(w.get_mut())), true),
                        Err(e) => (Err(arrow(e)), true),
                    },
                },
            };
            let pieces: Vec<Result<Bytes>> = match out {
                Ok(bytes) => {
                    let bytes = Bytes::from(bytes);
                    (0..bytes.len())
                        .step_by(MESSAGE_BYTES)
                        .map(|i| Ok(bytes.slice(i..bytes.len().min(i + MESSAGE_BYTES))))
                        .collect()
                }
                Err(e) => vec![Err(e)],
            };
            Some((futures::stream::iter(pieces), (batches, writer, done)))
        },
    );
    Box::pin(pieces.flatten())
}

/// What an IPC stream ends with: a continuation marker and a zero length.
const END: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/// Pieces of an IPC stream, or the error that ended them.
pub type BoxPieces = cairn_common::BoxStream<Result<Bytes>>;

/// The batches of the IPC stream `pieces` carry. A stream cut off before its end marker is
/// an error, not a short answer.
pub fn decode(pieces: BoxPieces) -> BatchStream {
    struct Reading {
        pieces: BoxPieces,
        decoder: StreamDecoder,
        buffer: Buffer,
        started: bool,
        /// The last bytes read: a whole stream ends with the end marker.
        tail: Vec<u8>,
    }
    let start = Reading {
        pieces,
        decoder: StreamDecoder::new(),
        buffer: Buffer::from(Vec::<u8>::new()),
        started: false,
        tail: Vec::new(),
    };
    let batches = futures::stream::unfold(Some(start), |state| async move {
        let mut r = state?;
        loop {
            while !r.buffer.is_empty() {
                match r.decoder.decode(&mut r.buffer) {
                    Ok(Some(batch)) => return Some((Ok(batch), Some(r))),
                    Ok(None) => {}
                    Err(e) => return Some((Err(arrow(e)), None)),
                }
            }
            match r.pieces.next().await {
                Some(Ok(bytes)) => {
                    r.tail
                        .extend_from_slice(&bytes[bytes.len().saturating_sub(END.len())..]);
                    r.tail.drain(..r.tail.len().saturating_sub(END.len()));
                    r.buffer = Buffer::from(bytes);
                    r.started = true;
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None if !r.started => return None,
                None => {
                    let whole = r.decoder.finish().is_ok() && r.tail == END;
                    return (!whole).then(|| (Err(arrow("the answer was cut off")), None));
                }
            }
        }
    });
    Box::pin(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use futures::TryStreamExt;
    use std::sync::Arc;

    fn batch(from: i64, n: usize) -> RecordBatch {
        let ints: Vec<i64> = (from..from + n as i64).collect();
        let text: Vec<String> = ints.iter().map(|i| format!("row {i}")).collect();
        RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(ints)) as _),
            ("t", Arc::new(StringArray::from(text)) as _),
        ])
        .unwrap()
    }

    fn stream(batches: Vec<RecordBatch>) -> BatchStream {
        Box::pin(futures::stream::iter(batches.into_iter().map(Ok)))
    }

    /// Pieces cut again at every `every` bytes, as a network might deliver them.
    fn recut(pieces: Vec<Bytes>, every: usize) -> BoxPieces {
        let all: Vec<u8> = pieces.concat();
        let cut: Vec<Result<Bytes>> = all
            .chunks(every)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(cut))
    }

    #[tokio::test]
    async fn batches_come_back_as_they_went_however_the_bytes_are_cut() {
        let sent = vec![batch(0, 3), batch(3, 200_000), batch(200_003, 1)];
        let pieces: Vec<Bytes> = encode(stream(sent.clone())).try_collect().await.unwrap();
        assert!(pieces.iter().all(|p| p.len() <= MESSAGE_BYTES));
        assert!(pieces.len() > 3, "the big batch spans messages");
        for every in [7, 4096, usize::MAX] {
            let got: Vec<RecordBatch> = decode(recut(pieces.clone(), every.min(1 << 30)))
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got, sent);
        }
        let none: Vec<Bytes> = encode(stream(vec![])).try_collect().await.unwrap();
        assert!(none.is_empty());
        let got: Vec<RecordBatch> = decode(recut(none, 1)).try_collect().await.unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_stream_cut_before_its_end_is_an_error() {
        let pieces: Vec<Bytes> = encode(stream(vec![batch(0, 10), batch(10, 10)]))
            .try_collect()
            .await
            .unwrap();
        let mut all: Vec<u8> = pieces.concat();
        all.truncate(all.len() - 8);
        let e = decode(recut(vec![Bytes::from(all)], 64))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cut off"), "{e}");
    }

    #[tokio::test]
    async fn an_error_in_the_batches_reaches_the_reader() {
        let failing: BatchStream = Box::pin(futures::stream::iter(vec![
            Ok(batch(0, 2)),
            Err(Error::component("shard 1", "disk on fire")),
        ]));
        let e = decode(encode(failing))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
    }
}
