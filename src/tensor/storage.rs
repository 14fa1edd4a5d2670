//! The bytes behind tensors: a read-only memory map or an owned, 8-byte aligned buffer.

use crate::error::{Error, Result};
use std::path::Path;

/// Bytes that tensors point into. Immutable once created; shared through `Arc`.
pub enum Storage {
    /// A read-only map of a file, with the file kept open to check that it is still whole.
    Mapped {
        /// The map.
        map: memmap2::Mmap,
        /// The mapped file.
        file: std::fs::File,
        /// Its path, for messages.
        path: String,
    },
    /// Owned bytes, kept in `u64` words so that every f32/u16 view is aligned.
    Owned {
        /// Backing words.
        words: Vec<u64>,
        /// Number of valid bytes.
        len: usize,
    },
}

impl Storage {
    /// Maps `path` read-only.
    pub fn map(path: &Path) -> Result<Storage> {
        let file = open_regular(path)?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.len() == 0 {
            return Err(Error::format(format!("{}: empty file", path.display())));
        }
        // SAFETY: the map is read-only and private to this process. libsutra never writes
        // through it; the documented contract (sutra_model_load) is that the caller must not
        // truncate or rewrite a model file while a model loaded from it is alive, exactly as
        // with llama.cpp's and rwkv.cpp's mmap loading. Every evaluation checks the file's
        // size first (`check_intact`), so a file truncated between two calls is an error, not
        // a SIGBUS; only a truncation during a call remains the caller's to avoid.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Storage::Mapped { map, file, path: path.display().to_string() })
    }

    /// For a mapped file: an I/O error if the file is now shorter than its map (truncated by
    /// another process: reading the lost pages would raise SIGBUS). Owned bytes are always
    /// intact. One `fstat` per call, no allocation unless it fails.
    pub fn check_intact(&self) -> Result<()> {
        if let Storage::Mapped { map, file, path } = self {
            let now = file.metadata().map(|m| m.len()).unwrap_or(0);
            if now < map.len() as u64 {
                return Err(Error::io_msg(
                    Path::new(path),
                    &format!("was truncated to {now} bytes while mapped ({} needed): reload the model", map.len()),
                ));
            }
        }
        Ok(())
    }

    /// Reads `path` fully into owned memory.
    pub fn read(path: &Path) -> Result<Storage> {
        use std::io::Read;
        let mut file = open_regular(path)?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        let mut s = Storage::zeroed(len)?;
        if let Storage::Owned { words, .. } = &mut s {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(words.as_mut_slice());
            file.read_exact(&mut bytes[..len]).map_err(|e| Error::io(path, e))?;
        }
        Ok(s)
    }

    /// Copies `bytes` into owned, aligned memory.
    pub fn from_bytes(bytes: &[u8]) -> Storage {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Storage::Owned { words, len: bytes.len() }
    }

    fn zeroed(len: usize) -> Result<Storage> {
        let n = len.div_ceil(8);
        let mut words = Vec::new();
        words.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("cannot allocate {len} bytes")))?;
        words.resize(n, 0);
        Ok(Storage::Owned { words, len })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped { map, .. } => map,
            Storage::Owned { words, len } => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
        }
    }

    /// Lets the kernel drop the resident pages of `range` of a mapped file (those wholly
    /// inside it), after their contents were copied elsewhere; a later read maps them again
    /// from the file. Owned bytes stay. Only a hint: a failure changes nothing.
    pub fn release_pages(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Storage::Mapped { map, .. } = self {
            // SAFETY: sysconf reads a constant of the system; it has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            let base = map.as_ptr() as usize;
            let start = (base + range.start).next_multiple_of(page);
            let end = (base + range.end.min(map.len())) / page * page;
            if end > start {
                // SAFETY: the map is read-only and backed by a file: MADV_DONTNEED only drops
                // page-table entries, and a later access faults in the very same bytes from
                // the file, so no reference into the map sees its contents change.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start - base, end - start)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens `path` for reading if it is a regular file: an empty path is an invalid argument,
/// and a folder, device or FIFO an I/O error naming it (mapping or reading one fails
/// obscurely or never ends).
fn open_regular(path: &Path) -> Result<std::fs::File> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("the file path is empty"));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io_msg(path, "not a regular file (a folder, a device or a FIFO)"));
    }
    Ok(file)
}
