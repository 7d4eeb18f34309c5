//! Which cache a `generate()` call builds: transformers' `cache_implementation` (with
//! `max_cache_len` and `cache_config`), resolved once (`_prepare_cache_for_generation`).

use serde_json::Value;

use super::quantized::{QuantizedCache, QuantizedCacheConfig};
use super::{DynamicCache, KvCache, OffloadedCache, StaticCache};
use crate::error::Result;

/// A resolved `cache_implementation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CacheImplementation {
    /// `DynamicCache`: grows as tokens come (unset, `"dynamic"`, and `"hybrid"` / `"paged"`,
    /// which transformers' `generate()` runs on a dynamic cache when a generation config sets
    /// them).
    #[default]
    Dynamic,
    /// `StaticCache` of `max_cache_len` tokens per row (`"static"`, `"sliding_window"`,
    /// `"hybrid_chunked"`).
    Static {
        /// Tokens per row.
        max_cache_len: usize,
    },
    /// `DynamicCache(offloading=True)`: on the host (`"offloaded"`).
    Offloaded,
    /// `StaticCache(offloading=True)`: on the host (`"offloaded_static"`, `"offloaded_hybrid"`,
    /// `"offloaded_hybrid_chunked"`).
    OffloadedStatic {
        /// Tokens per row.
        max_cache_len: usize,
    },
    /// `QuantizedCache` with `cache_config` (`"quantized"`).
    Quantized(QuantizedCacheConfig),
}

impl CacheImplementation {
    /// The cache for `name` (a valid `cache_implementation`, else the dynamic cache) in a call
    /// whose `max_length` is `max_length`: static caches hold `max_length - 1` tokens, or
    /// `max_cache_len` when that is larger (transformers: `max(max_length - 1, max_cache_len)`);
    /// the quantized cache reads `cache_config`.
    pub fn resolve(
        name: Option<&str>,
        max_length: usize,
        max_cache_len: Option<usize>,
        cache_config: Option<&Value>,
    ) -> Result<Self> {
        if name == Some("quantized") {
            return Ok(Self::Quantized(QuantizedCacheConfig::from_json(
                cache_config,
            )?));
        }
        Ok(Self::sized(name, max_length, max_cache_len))
    }

    fn sized(name: Option<&str>, max_length: usize, max_cache_len: Option<usize>) -> Self {
        let len = max_length.saturating_sub(1).max(max_cache_len.unwrap_or(0));
        match name {
            Some("static" | "sliding_window" | "hybrid_chunked") => {
                Self::Static { max_cache_len: len }
            }
            Some("offloaded_static" | "offloaded_hybrid" | "offloaded_hybrid_chunked") => {
                Self::OffloadedStatic { max_cache_len: len }
            }
            Some("offloaded") => Self::Offloaded,
            _ => Self::Dynamic,
        }
    }

    /// A new, empty cache of this kind.
    pub fn build(&self) -> Box<dyn KvCache> {
        match *self {
            Self::Dynamic => Box::new(DynamicCache::new()),
            Self::Static { max_cache_len } => Box::new(StaticCache::new(max_cache_len)),
            Self::Offloaded => Box::new(OffloadedCache::new(Box::new(DynamicCache::new()), None)),
            Self::OffloadedStatic { max_cache_len } => Box::new(OffloadedCache::new(
                Box::new(StaticCache::new(max_cache_len)),
                Some(max_cache_len),
            )),
            Self::Quantized(config) => Box::new(QuantizedCache::new(config)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_transformers_maps_them() {
        use CacheImplementation::*;
        let r = |name, max_cache_len| CacheImplementation::sized(name, 30, max_cache_len);
        assert_eq!(r(None, None), Dynamic);
        assert_eq!(r(Some("dynamic"), Some(99)), Dynamic);
        assert_eq!(r(Some("hybrid"), None), Dynamic);
        assert_eq!(r(Some("paged"), None), Dynamic);
        assert_eq!(r(Some("offloaded"), None), Offloaded);
        for name in ["static", "sliding_window", "hybrid_chunked"] {
            assert_eq!(r(Some(name), None), Static { max_cache_len: 29 });
        }
        assert_eq!(r(Some("static"), Some(64)), Static { max_cache_len: 64 });
        assert_eq!(r(Some("static"), Some(8)), Static { max_cache_len: 29 });
        for name in [
            "offloaded_static",
            "offloaded_hybrid",
            "offloaded_hybrid_chunked",
        ] {
            assert_eq!(r(Some(name), None), OffloadedStatic { max_cache_len: 29 });
        }
    }
}
