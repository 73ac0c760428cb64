//! One blob from the registry into the store: the bytes stream from the connection to a
//! blocking task that stores them (hashing and writing a locked temp file, checked for size
//! and digest before the blob becomes visible) and, for a layer to unpack, applies them into
//! the layer's staging directory in the same pass
//! ([`molde_image::unpack::store_and_unpack`]). A connection that breaks is resumed where it
//! stopped, with a range request (or, from a registry that ignores the range, by skipping
//! what was already received): the store sees one continuous stream.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::StreamExt;
use molde_image::blob::{BlobError, Expected};
use molde_image::layerfs::Digest;
use molde_image::unpack::{StreamedLayer, store_and_unpack};
use molde_image::{Layer, Store, StoreError};
use oci_client::client::BlobResponse;
use tokio::sync::mpsc;

use crate::client::Remote;
use crate::error::{self, RegistryError};

/// Reads what the network side sends; an `Err` ends the ingest with that error.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Download `layer`'s blob into `store`, calling `progress(bytes so far)` as it comes, and,
/// given the ChainID to unpack it under, unpack it as it streams in.
pub(crate) async fn download(
    remote: &Remote,
    store: &Store,
    layer: &Layer,
    unpack_as: Option<Digest>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<StreamedLayer, RegistryError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(32);
    let ingest_store = store.clone();
    let l = *layer;
    let ingest = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        match unpack_as {
            Some(chain) => store_and_unpack(&ingest_store, reader, &l, chain),
            None => {
                let expected = Expected {
                    digest: l.digest,
                    size: Some(l.size),
                };
                Ok(StreamedLayer {
                    blob: ingest_store.ingest_blob(reader, Some(expected))?,
                    staged: None,
                })
            }
        }
    });
    let fed = feed(remote, layer, &tx, progress).await;
    if let Err(e) = &fed {
        // Make the ingest fail (and drop its temp file) rather than store a short blob.
        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
    }
    drop(tx);
    let stored = ingest.await.map_err(|e| RegistryError::Task {
        reference: remote.name.clone(),
        reason: e.to_string(),
    })?;
    let stored_err = |e| match e {
        StoreError::Blob(BlobError::DigestMismatch { expected, actual }) => {
            RegistryError::DigestMismatch {
                reference: remote.name.clone(),
                what: format!("blob {}", layer.digest),
                expected,
                actual,
            }
        }
        source => RegistryError::Store {
            reference: remote.name.clone(),
            source: Box::new(source),
        },
    };
    match (fed, stored) {
        // The store stopped reading: its own error says why.
        (Err(RegistryError::Task { .. }), Err(e)) => Err(stored_err(e)),
        // ... or it needed no more bytes: another pull (this process or another) stored
        // the verified blob and unpacked the layer meanwhile.
        (Err(RegistryError::Task { .. }), Ok(stored)) => Ok(stored),
        (Err(e), _) => Err(e),
        (Ok(()), stored) => stored.map_err(stored_err),
    }
}

/// Send the blob's bytes down `tx`, resuming after broken connections.
async fn feed(
    remote: &Remote,
    layer: &Layer,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), RegistryError> {
    let desc = oci_client::manifest::OciDescriptor {
        media_type: layer.media_type.as_str().to_owned(),
        digest: layer.digest.to_string(),
        size: layer.size as i64,
        ..Default::default()
    };
    let (attempts, mut pause) = remote.policy();
    let mut offset = 0u64;
    let mut failures = 0u32;
    let closed = || RegistryError::Task {
        reference: remote.name.clone(),
        reason: "the store stopped reading".into(),
    };
    loop {
        let response = remote
            .retry(|| {
                remote
                    .client
                    .pull_blob_stream_partial(&remote.reference, &desc, offset, None)
            })
            .await?;
        // A registry that ignores the range sends everything again: skip what we have.
        let (mut stream, mut skip) = match response {
            BlobResponse::Full(s) => (s.stream, offset),
            BlobResponse::Partial(s) => (s.stream, 0),
        };
        let mut broken = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(mut b) => {
                    if skip > 0 {
                        let n = skip.min(b.len() as u64);
                        let _ = b.split_to(n as usize);
                        skip -= n;
                    }
                    if b.is_empty() {
                        continue;
                    }
                    offset += b.len() as u64;
                    progress(offset);
                    tx.send(Ok(b)).await.map_err(|_| closed())?;
                }
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        // All bytes in (the client's own digest check may complain at the end: the
        // store's ingest checks the digest itself and says which).
        if offset >= layer.size {
            return Ok(());
        }
        failures += 1;
        if failures >= attempts {
            return Err(match broken {
                Some(e) => error::from_transport(
                    &remote.name,
                    &remote.registry,
                    oci_client::errors::OciDistributionError::IoError(e),
                ),
                None => RegistryError::Truncated {
                    reference: remote.name.clone(),
                    digest: layer.digest,
                    expected: layer.size,
                    got: offset,
                },
            });
        }
        tracing::debug!(digest = %layer.digest, offset, "download broke off; resuming");
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2);
    }
}
