//! The product file cache: one JSON file per product in `CACHE_DIR`.
//!
//! Writes go to a temporary file in the same directory and are renamed into place, so a
//! reader sees either the old entry or the new one, never half a file. An entry that does
//! not parse, or describes another product, is reported as corrupt: it is neither served
//! nor silently replaced, because a cache that quietly heals hides the fault that broke it.

use std::path::{Path, PathBuf};

use crate::shop::Product;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache entry {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cache I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ProductCache {
    dir: PathBuf,
}

impl ProductCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProductCache { dir: dir.into() }
    }

    pub fn path_for(&self, id: i64) -> PathBuf {
        self.dir.join(format!("product-{id}.json"))
    }

    /// `Ok(None)` on a miss.
    pub async fn get(&self, id: i64) -> Result<Option<Product>, CacheError> {
        let path = self.path_for(id);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let product: Product = serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
            path: path.clone(),
            reason: format!("not a product document: {e}"),
        })?;
        if product.id != id {
            return Err(CacheError::Corrupt {
                path,
                reason: format!("entry describes product {} instead of {id}", product.id),
            });
        }
        Ok(Some(product))
    }

    /// Writes the entry atomically (temporary file + rename).
    pub async fn put(&self, product: &Product) -> Result<(), CacheError> {
        let path = self.path_for(product.id);
        let tmp = self.dir.join(format!(
            ".product-{}.json.{}.tmp",
            product.id,
            uuid::Uuid::new_v4().simple()
        ));
        let body = serde_json::to_vec(product).map_err(|e| CacheError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path, source }
        };
        tokio::fs::write(&tmp, &body).await.map_err(io(&tmp))?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(&path)(e));
        }
        Ok(())
    }

    /// Removes an entry; a missing entry is fine.
    pub async fn invalidate(&self, id: i64) -> Result<(), CacheError> {
        let path = self.path_for(id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }
}
