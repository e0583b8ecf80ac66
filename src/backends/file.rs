//! `file.raw`: opaque bytes, streamed from and to files in parts, so a file of
//! any size passes through bounded memory. Each version is a new object
//! written with a multipart upload, which becomes visible only on completion.

use async_trait::async_trait;
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::document::open_recorded;
use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, FileFormat, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub const KIND: &str = "file.raw";

/// Size of one upload part.
const PART_SIZE: usize = 8 * 1024 * 1024;

pub struct RawFileBackend;

#[async_trait]
impl DataBackend for RawFileBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Bytes(_))
            || matches!(
                obj,
                Object::File {
                    format: FileFormat::Raw,
                    ..
                }
            )
    }

    fn referenced(&self, meta: &Metadata) -> Option<Vec<String>> {
        Some(crate::store::backend::recorded_paths(meta, &["path"]))
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        opts: &PutOptions,
    ) -> Result<Written> {
        let path = cx
            .data_dir
            .clone()
            .join(format!("{}.bin", uuid::Uuid::new_v4()));
        let upload = cx
            .root
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| StoreError::object_store(&path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = 0u64;
        let result: Result<()> = async {
            match obj {
                Object::Bytes(b) => {
                    size = b.len() as u64;
                    writer.put(b);
                }
                Object::File { path: file, .. } => {
                    let mut f = tokio::fs::File::open(&file)
                        .await
                        .map_err(|e| StoreError::io(&file, e))?;
                    let mut buf = vec![0u8; 1024 * 1024];
                    loop {
                        let n = f
                            .read(&mut buf)
                            .await
                            .map_err(|e| StoreError::io(&file, e))?;
                        if n == 0 {
                            break;
                        }
                        size += n as u64;
                        if let Some(pb) = &opts.progress {
                            pb.inc(n as u64);
                        }
                        writer
                            .wait_for_capacity(4)
                            .await
                            .map_err(|e| StoreError::object_store(&path, e))?;
                        writer.write(&buf[..n]);
                    }
                }
                other => {
                    return Err(StoreError::invalid_input(
                        cx.name,
                        format!("{} cannot be stored as {KIND}", other.describe()),
                    ));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(|e| StoreError::object_store(&path, e))?;
        Ok(Written {
            kind: KIND.into(),
            uri: cx.root.url_of(&path).to_string(),
            kind_meta: json!({ "path": cx.root.relative(&path), "size": size }),
        })
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> Result<Data> {
        let (path, result) = open_recorded(cx, meta).await?;
        let size = result.meta.size;
        let p = path.clone();
        let stream = result
            .into_stream()
            .map(move |r| r.map_err(|e| StoreError::object_store(&p, e)))
            .boxed();
        Ok(Data::File { size, stream })
    }
}
