//! A store root: the object store behind a URL (`file://`, `memory://`,
//! `s3://`), the path prefix inside it, and the URL that other engines (Delta,
//! DataFusion) use to reach the same place.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::durable::DurableLocal;
use super::error::{Result, StoreError};

/// Default root when neither a URL nor `$OMEGA_ROOT` is given.
pub const DEFAULT_ROOT: &str = "./.omega";

/// Where a store lives: `store` is rooted at the object store's root and
/// `prefix` is the store's directory inside it, so that a table at
/// `prefix/x` has the URL `base.join(prefix/x)`.
#[derive(Debug, Clone)]
pub struct Root {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    /// scheme and authority only, e.g. `file:///`, `s3://bucket/`, `memory:///`
    pub(crate) base: Url,
    /// The URL the user opened, normalised (for display).
    pub(crate) url: Url,
    /// A plain local directory (no wrapped store): bulk reads may use the
    /// file system directly.
    pub(crate) local_dir: bool,
}

impl Root {
    /// Opens `location`: a URL, or a plain local path (relative paths are
    /// resolved against the current directory; the directory is created).
    pub fn open(location: &str) -> Result<Self> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: location.to_string(),
            reason,
        };
        let url = match Url::parse(location) {
            Ok(u) if u.scheme().len() > 1 => u,
            // no scheme (or a Windows drive letter): a local path
            _ => {
                let path = std::path::absolute(location)
                    .map_err(|e| invalid(format!("cannot resolve the path: {e}")))?;
                Url::from_directory_path(&path)
                    .map_err(|_| invalid("not an absolute path".into()))?
            }
        };
        // deltalake decodes a table URL's path more than once, so a '%' in
        // the root's path names another directory for a table's files than
        // for the store's records (`/data/p%41q` wrote tables to `/data/pAq`)
        if Path::from_url_path(url.path()).is_ok_and(|p| p.as_ref().contains('%')) {
            return Err(invalid(
                "a '%' in the root's path cannot be used (table files would be written \
                 elsewhere); choose a directory or prefix without '%'"
                    .into(),
            ));
        }
        // the same for the path tables are opened by: the canonical one, which a
        // symlink on the way may give a '%' (checked before anything is created)
        if let Ok(dir) = url.to_file_path()
            && let Some(real) = existing_ancestor(&dir)
            && real.to_string_lossy().contains('%')
        {
            return Err(invalid(format!(
                "it leads (through a symlink) to {}, and a '%' in the root's path cannot be \
                 used (table files would be written elsewhere); choose a directory without '%'",
                real.display()
            )));
        }
        match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| invalid("not a local path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| invalid(format!("cannot create directory {dir:?}: {e}")))?;
                let dir = dir
                    .canonicalize()
                    .map_err(|e| invalid(format!("cannot resolve {dir:?}: {e}")))?;
                let url = Url::from_directory_path(&dir)
                    .map_err(|_| invalid("not an absolute path".into()))?;
                let prefix = Path::from_url_path(url.path())
                    .map_err(|e| invalid(format!("path not usable: {e}")))?;
                Ok(Self {
                    // every write synced before it returns (see `durable`)
                    store: Arc::new(DurableLocal::new(Arc::new(LocalFileSystem::new()))),
                    prefix,
                    base: Url::parse("file:///").expect("static url"),
                    url,
                    local_dir: true,
                })
            }
            "memory" => Ok(Self {
                store: Arc::new(InMemory::new()),
                prefix: Path::from_url_path(url.path())
                    .map_err(|e| invalid(format!("path not usable: {e}")))?,
                base: Url::parse("memory:///").expect("static url"),
                url,
                local_dir: false,
            }),
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| invalid("an s3 URL needs a bucket: s3://bucket/prefix".into()))?
                    .to_string();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                // Endpoints of S3-compatible servers (MinIO, moto, …) come from the
                // usual variables; plain http is allowed only for them.
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL_S3"))
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                {
                    builder = builder
                        .with_endpoint(&endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                // Options in the URL's query (`?endpoint=…&region=…`) override the
                // environment; names are object_store's AmazonS3ConfigKey names.
                for (k, v) in url.query_pairs() {
                    let key: AmazonS3ConfigKey = k.parse().map_err(|_| {
                        invalid(format!("unknown S3 option '{k}' in the URL query"))
                    })?;
                    if key == AmazonS3ConfigKey::Endpoint {
                        builder = builder
                            .with_allow_http(v.starts_with("http://"))
                            .with_virtual_hosted_style_request(false);
                    }
                    builder = builder.with_config(key, v.as_ref());
                }
                let store = builder
                    .build()
                    .map_err(|e| invalid(format!("cannot configure S3: {e}")))?;
                super::delta_s3::register_s3_log_store();
                // The query may hold credentials: never show it.
                let mut url = url;
                url.set_query(None);
                Ok(Self {
                    store: Arc::new(store),
                    prefix: Path::from_url_path(url.path())
                        .map_err(|e| invalid(format!("path not usable: {e}")))?,
                    base: Url::parse(&format!("s3://{bucket}/"))
                        .map_err(|e| invalid(e.to_string()))?,
                    url,
                    local_dir: false,
                })
            }
            other => Err(invalid(format!(
                "scheme '{other}' is not supported; use file://, memory:// or s3://"
            ))),
        }
    }

    /// The root from `$OMEGA_ROOT`, else [`DEFAULT_ROOT`].
    pub fn from_env() -> Result<Self> {
        let loc = std::env::var("OMEGA_ROOT").unwrap_or_else(|_| DEFAULT_ROOT.to_string());
        Self::open(&loc)
    }

    /// The object store, rooted at its root (not at the prefix).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL the root was opened with.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `prefix/parts…`; every part must already be a safe segment.
    pub(crate) fn path(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.clone().join(*part);
        }
        p
    }

    /// The URL of a file inside this root.
    pub(crate) fn url_of(&self, path: &Path) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/{}", path.as_ref()));
        url
    }

    /// The URL of a directory inside this root (with a trailing `/`).
    pub(crate) fn dir_url_of(&self, path: &Path) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/{}/", path.as_ref()));
        url
    }

    /// `path` relative to the root's prefix (what metadata records keep, so a
    /// store can be moved or copied as a whole).
    pub(crate) fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// Reverses [`Root::relative`]. Every segment is checked, so a tampered
    /// record cannot point outside the root.
    pub(crate) fn resolve(&self, relative: &str) -> Result<Path> {
        let mut p = self.prefix.clone();
        for part in relative.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(StoreError::InvalidUrl {
                    url: relative.to_string(),
                    reason: "a recorded data path is not a plain relative path".into(),
                });
            }
            p = p.join(part);
        }
        Ok(p)
    }

    /// Wraps this root's object store (fault injection in tests, caching, …).
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.store = store;
        self.local_dir = false;
        self
    }

    /// Cheap reachability check: a list of the prefix.
    pub(crate) async fn check(&self) -> Result<()> {
        use futures::TryStreamExt;
        let probe = self.path(&[".omega-probe"]);
        // A HEAD of a missing object proves the credentials and endpoint work.
        match self.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StoreError::object_store(&self.url, e)),
        }
        let _ = self
            .store
            .list(Some(&self.prefix))
            .try_next()
            .await
            .map_err(|e| StoreError::object_store(&self.url, e))?;
        Ok(())
    }
}

/// The canonical path of `dir`'s nearest ancestor that exists (`dir` itself
/// when it does): where a root that is yet to be created will be.
fn existing_ancestor(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    dir.ancestors().find_map(|a| a.canonicalize().ok())
}
