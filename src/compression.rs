//! How an archive's files are compressed (`--compress`): `pg_dump`'s own compression for the
//! files it writes, and the same method for the rows files dbsync writes itself (the parts of
//! split and masked tables), so that an archive is compressed throughout. Temporary dumps of a
//! sync are not compressed: they are read once, right away, and compressing costs CPU the copy
//! needs.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_compression::Level;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    None,
    Gzip,
    Lz4,
    Zstd,
}

/// A method and, if the user gave one, its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub method: Method,
    pub level: Option<i32>,
}

/// What archives get unless the user says otherwise: what `pg_dump -Fd` does by default, and
/// what every `pg_restore` reads.
pub const DEFAULT: Compression = Compression {
    method: Method::Gzip,
    level: None,
};

pub const NONE: Compression = Compression {
    method: Method::None,
    level: None,
};

/// The first `pg_dump` that writes lz4 and zstd (when built with them).
pub const FIRST_MAJOR_WITH_LZ4_AND_ZSTD: u32 = 16;

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Gzip => "gzip",
            Method::Lz4 => "lz4",
            Method::Zstd => "zstd",
        }
    }

    /// The levels the method takes, as `pg_dump` accepts them.
    fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Method::None => 0..=0,
            Method::Gzip => 1..=9,
            Method::Lz4 => 1..=12,
            Method::Zstd => 1..=22,
        }
    }

    /// The suffix a compressed file carries (as `pg_dump` names its data files).
    fn suffix(self) -> &'static str {
        match self {
            Method::None => "",
            Method::Gzip => ".gz",
            Method::Lz4 => ".lz4",
            Method::Zstd => ".zst",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level {
            Some(level) => write!(formatter, "{}:{level}", self.method.name()),
            None => formatter.write_str(self.method.name()),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// `none`, or `gzip`, `lz4`, `zstd`, each with an optional `:LEVEL`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, level) = match text.trim().split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (text.trim(), None),
        };
        let method = match name.to_ascii_lowercase().as_str() {
            "none" => Method::None,
            "gzip" => Method::Gzip,
            "lz4" => Method::Lz4,
            "zstd" => Method::Zstd,
            _ => {
                return Err(format!(
                    "{text:?} is not a compression: use none, gzip, lz4 or zstd, each with an optional :LEVEL (zstd:3)"
                ));
            }
        };
        let level = match level {
            None => None,
            Some(_) if method == Method::None => return Err("none takes no level".to_string()),
            Some(level) => {
                let range = method.levels();
                match level.trim().parse::<i32>() {
                    Ok(level) if range.contains(&level) => Some(level),
                    _ => {
                        return Err(format!(
                            "{text:?}: the level of {} is a number from {} to {}",
                            method.name(),
                            range.start(),
                            range.end()
                        ));
                    }
                }
            }
        };
        Ok(Compression { method, level })
    }
}

impl Compression {
    /// The `--compress` argument `pg_dump` gets. A level alone means gzip to every `pg_dump`
    /// (11 and later); a method name only to 16 and later, which the need for lz4 and zstd
    /// implies.
    pub fn pg_dump_argument(&self) -> String {
        match (self.method, self.level) {
            (Method::None, _) => "--compress=0".to_string(),
            // gzip at zlib's default level, which is what pg_dump itself means by gzip.
            (Method::Gzip, None) => "--compress=6".to_string(),
            (Method::Gzip, Some(level)) => format!("--compress={level}"),
            (method, None) => format!("--compress={}", method.name()),
            (method, Some(level)) => format!("--compress={}:{level}", method.name()),
        }
    }

    /// The oldest `pg_dump` that writes this.
    pub fn first_pg_dump_major(&self) -> u32 {
        match self.method {
            Method::Lz4 | Method::Zstd => FIRST_MAJOR_WITH_LZ4_AND_ZSTD,
            Method::None | Method::Gzip => 0,
        }
    }

    /// The name of a rows file written with this compression.
    pub fn rows_file_name(&self, plain: &str) -> String {
        format!("{plain}{}", self.method.suffix())
    }

    /// `inner`, compressing what is written to it; shut it down to finish the stream.
    pub fn writer<'a>(&self, inner: impl AsyncWrite + Unpin + Send + 'a) -> Pin<Box<dyn AsyncWrite + Send + 'a>> {
        use async_compression::tokio::write::{GzipEncoder, Lz4Encoder, ZstdEncoder};
        let level = self.level.map_or(Level::Default, Level::Precise);
        match self.method {
            Method::None => Box::pin(inner),
            Method::Gzip => Box::pin(GzipEncoder::with_quality(inner, level)),
            Method::Lz4 => Box::pin(Lz4Encoder::with_quality(inner, level)),
            Method::Zstd => Box::pin(ZstdEncoder::with_quality(inner, level)),
        }
    }
}

/// The file `name` under `directory` (with the suffix of whatever compressed it), and the method,
/// if it is there.
pub fn find_compressed(directory: &Path, name: &str) -> Option<(PathBuf, Method)> {
    [Method::None, Method::Gzip, Method::Lz4, Method::Zstd]
        .into_iter()
        .map(|method| (directory.join(format!("{name}{}", method.suffix())), method))
        .find(|(path, _)| path.is_file())
}

/// `inner`, decompressed as `method` wrote it.
pub fn reader<'a>(method: Method, inner: impl AsyncBufRead + Unpin + Send + 'a) -> Pin<Box<dyn AsyncRead + Send + 'a>> {
    use async_compression::tokio::bufread::{GzipDecoder, Lz4Decoder, ZstdDecoder};
    match method {
        Method::None => Box::pin(inner),
        Method::Gzip => Box::pin(GzipDecoder::new(inner)),
        Method::Lz4 => Box::pin(Lz4Decoder::new(inner)),
        Method::Zstd => Box::pin(ZstdDecoder::new(inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_levels_are_read_as_pg_dump_takes_them() {
        let parsed = |text: &str| text.parse::<Compression>();
        assert_eq!(parsed("gzip"), Ok(DEFAULT));
        assert_eq!(parsed("zstd:3").unwrap().to_string(), "zstd:3");
        assert_eq!(parsed("none").unwrap().pg_dump_argument(), "--compress=0");
        assert_eq!(parsed("gzip").unwrap().pg_dump_argument(), "--compress=6");
        assert_eq!(parsed("gzip:1").unwrap().pg_dump_argument(), "--compress=1");
        assert_eq!(parsed("lz4").unwrap().pg_dump_argument(), "--compress=lz4");
        assert_eq!(parsed("zstd:19").unwrap().pg_dump_argument(), "--compress=zstd:19");
        assert_eq!(parsed("zstd").unwrap().first_pg_dump_major(), 16);
        assert_eq!(parsed("gzip").unwrap().first_pg_dump_major(), 0);
        for wrong in ["brotli", "gzip:0", "gzip:10", "zstd:x", "none:1", ""] {
            assert!(parsed(wrong).is_err(), "{wrong:?} was accepted");
        }
    }

    #[tokio::test]
    async fn what_each_method_writes_reads_back() {
        let rows: Vec<u8> = (0..100_000)
            .flat_map(|n: u32| format!("{n}\trow {n}\n").into_bytes())
            .collect();
        for text in ["none", "gzip", "gzip:1", "lz4", "zstd", "zstd:5"] {
            let compression: Compression = text.parse().unwrap();
            let mut written = Vec::new();
            {
                use tokio::io::AsyncWriteExt;
                let mut writer = compression.writer(&mut written);
                writer.write_all(&rows).await.unwrap();
                writer.shutdown().await.unwrap();
            }
            if compression.method != Method::None {
                assert!(
                    written.len() < rows.len() * 3 / 4,
                    "{text} wrote {} bytes",
                    written.len()
                );
            }
            let mut read = Vec::new();
            {
                use tokio::io::AsyncReadExt;
                reader(compression.method, written.as_slice())
                    .read_to_end(&mut read)
                    .await
                    .unwrap();
            }
            assert!(read == rows, "{text} did not read back");
        }
    }
}
