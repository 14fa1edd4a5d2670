//! PyTorch `.pth` checkpoints, as `torch.save` of a state dict writes them: a zip archive of
//! stored (uncompressed) entries under one folder, `<folder>/data.pkl` (the pickled dict) and
//! `<folder>/data/<key>` (one entry per storage).
//!
//! Nothing here runs a pickle. A small stack machine reads the opcodes a state dict of
//! tensors is made of (dicts, tuples, strings, integers, memo references, the persistent ids
//! of storages) and knows exactly the names such a pickle refers to —
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and `torch.*Storage` types —
//! as data; any other name, opcode or shape of file is a format error naming it. Tensors
//! then point into the mapped archive where their storages lie, so loading a `.pth` costs
//! what loading a safetensors file costs.

use super::safetensors::SafetensorsFile;
use super::Format;
use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// The first bytes of a zip archive (a local file header).
pub const MAGIC: &[u8; 4] = b"PK\x03\x04";

/// One stored entry of the archive: its name and where its bytes lie in the file.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    /// The entry's path inside the archive.
    pub name: String,
    /// Offset of its first byte in the file.
    pub start: usize,
    /// Its length in bytes.
    pub len: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as u64)
}
fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The entries of the zip archive `b` (`file` names it in messages), from its central
/// directory (zip64 records included). Every entry must be stored uncompressed and lie
/// inside the file.
pub fn zip_entries(b: &[u8], file: &str) -> Result<Vec<ZipEntry>> {
    let fail = |m: String| Error::format(format!("{file}: {m}"));
    let short = || fail(format!("{} bytes: truncated zip archive (no end of central directory)", b.len()));
    // The end-of-central-directory record: 22 bytes and a comment of up to 65535.
    let lowest = b.len().saturating_sub(22 + 65535);
    let eocd = (lowest..=b.len().saturating_sub(22))
        .rev()
        .find(|&p| b.len() >= 22 && b[p..p + 4] == *b"PK\x05\x06")
        .ok_or_else(short)?;
    let (mut count, mut cd_size, mut cd_off) = (
        u16_at(b, eocd + 10).ok_or_else(short)?,
        u32_at(b, eocd + 12).ok_or_else(short)?,
        u32_at(b, eocd + 16).ok_or_else(short)?,
    );
    if count == 0xffff || cd_size == 0xffff_ffff || cd_off == 0xffff_ffff {
        // zip64: a locator just before the record points at the zip64 record.
        let loc = eocd.checked_sub(20).filter(|&l| b[l..l + 4] == *b"PK\x06\x07");
        let loc = loc.ok_or_else(|| fail("zip64 sizes without a zip64 locator".into()))?;
        let z = u64_at(b, loc + 8).unwrap_or(u64::MAX) as usize;
        if b.get(z..z + 4) != Some(b"PK\x06\x06") || z + 56 > b.len() {
            return Err(fail(format!("zip64 end of central directory at offset {z} is not there")));
        }
        (count, cd_size, cd_off) = (
            u64_at(b, z + 32).ok_or_else(short)?,
            u64_at(b, z + 40).ok_or_else(short)?,
            u64_at(b, z + 48).ok_or_else(short)?,
        );
    }
    let cd_end = cd_off.checked_add(cd_size).filter(|&e| e <= b.len() as u64);
    let cd_end = cd_end.ok_or_else(|| {
        fail(format!("central directory ({cd_size} bytes at offset {cd_off}) lies past the end of the file"))
    })? as usize;
    if count.saturating_mul(46) > cd_size {
        return Err(fail(format!("{count} entries cannot fit in a central directory of {cd_size} bytes")));
    }
    let mut p = cd_off as usize;
    let mut out = Vec::with_capacity(count as usize);
    let mut seen = std::collections::HashSet::new();
    for i in 0..count {
        let bad = || fail(format!("central directory entry {i} is truncated or corrupt"));
        if p + 46 > cd_end || b[p..p + 4] != *b"PK\x01\x02" {
            return Err(bad());
        }
        let flags = u16_at(b, p + 8).ok_or_else(bad)?;
        let method = u16_at(b, p + 10).ok_or_else(bad)?;
        let mut comp = u32_at(b, p + 20).ok_or_else(bad)?;
        let mut size = u32_at(b, p + 24).ok_or_else(bad)?;
        let (n_name, n_extra, n_comment) = (
            u16_at(b, p + 28).ok_or_else(bad)? as usize,
            u16_at(b, p + 30).ok_or_else(bad)? as usize,
            u16_at(b, p + 32).ok_or_else(bad)? as usize,
        );
        let mut local = u32_at(b, p + 42).ok_or_else(bad)?;
        let name_end = p + 46 + n_name;
        let next = name_end + n_extra + n_comment;
        if next > cd_end {
            return Err(bad());
        }
        let name = std::str::from_utf8(&b[p + 46..name_end])
            .map_err(|_| fail(format!("central directory entry {i} has a name that is not UTF-8")))?
            .to_string();
        // The zip64 extra field holds, in order, whichever of the sizes and offset overflowed.
        let mut e = name_end;
        while e + 4 <= name_end + n_extra {
            let (id, len) = (u16_at(b, e).ok_or_else(bad)?, u16_at(b, e + 2).ok_or_else(bad)? as usize);
            if id == 1 {
                let mut f = e + 4;
                for v in [&mut size, &mut comp, &mut local] {
                    if *v == 0xffff_ffff && f + 8 <= e + 4 + len {
                        *v = u64_at(b, f).ok_or_else(bad)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        if flags & 1 != 0 {
            return Err(Error::unsupported(format!("{file}: entry '{name}' is encrypted")));
        }
        if method != 0 || comp != size {
            return Err(Error::unsupported(format!(
                "{file}: entry '{name}' is compressed (method {method}); torch.save stores entries uncompressed"
            )));
        }
        let l = local as usize;
        let head = b.get(l..l + 30).filter(|h| h[..4] == *b"PK\x03\x04");
        let head = head.ok_or_else(|| fail(format!("entry '{name}': no local header at offset {local}")))?;
        let start = l + 30 + u16_at(head, 26).unwrap_or(0) as usize + u16_at(head, 28).unwrap_or(0) as usize;
        if (start as u64).checked_add(size).is_none_or(|end| end > b.len() as u64) {
            return Err(fail(format!(
                "entry '{name}' ({size} bytes at offset {start}) points past the end of the file ({} bytes)",
                b.len()
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(fail(format!("entry '{name}' appears twice")));
        }
        out.push(ZipEntry { name, start, len: size as usize });
        p = next;
    }
    Ok(out)
}

/// What a global name in the pickle stands for: only the names a state dict uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    StorageType(DType),
}

/// A storage's persistent id: its element type, its entry's key and its element count.
#[derive(Debug)]
struct StorageRef {
    dtype: DType,
    key: String,
    numel: u64,
}

/// A tensor the pickle rebuilds: a view of a storage.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
}

/// A value on the pickle machine's stack (shared, so that memo references copy nothing).
#[derive(Debug, Clone)]
enum Value {
    Mark,
    None,
    Bool,
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn what(&self) -> &'static str {
        match self {
            Value::Mark => "a mark",
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an integer",
            Value::Str(_) => "a string",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a global name",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// The global `module.name`, if a state dict of tensors may name it.
fn global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
        ("torch", "FloatStorage") => Global::StorageType(DType::F32),
        ("torch", "BFloat16Storage") => Global::StorageType(DType::BF16),
        ("torch", "HalfStorage") => Global::StorageType(DType::F16),
        ("torch", "CharStorage") => Global::StorageType(DType::I8),
        ("torch", "ByteStorage") => Global::StorageType(DType::U8),
        ("torch", "LongStorage") => Global::StorageType(DType::I64),
        _ => return None,
    })
}

/// Runs the restricted pickle machine over `p` (a state dict's `data.pkl`): the name → tensor
/// pairs, in the pickle's order.
fn unpickle(p: &[u8], what: &str) -> Result<Vec<(String, Rc<TensorRef>)>> {
    let fail = |at: usize, m: String| Error::format(format!("{what}: byte {at}: {m}"));
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8]> {
        let s = p.get(*i..*i + n).ok_or_else(|| fail(*i, "truncated pickle".into()))?;
        *i += n;
        Ok(s)
    };
    let le = |s: &[u8]| s.iter().rev().fold(0u64, |a, &b| (a << 8) | b as u64);
    // Pops everything down to the last mark.
    fn pop_mark(stack: &mut Vec<Value>) -> Option<Vec<Value>> {
        let m = stack.iter().rposition(|v| matches!(v, Value::Mark))?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Some(items)
    }
    loop {
        let at = i;
        let op = *take(&mut i, 1)?.first().unwrap_or(&0);
        let underflow = || fail(at, format!("opcode 0x{op:02x} on an empty stack"));
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            0x95 => {
                take(&mut i, 8)?;
            }
            b'}' => stack.push(Value::Dict(Rc::default())),
            b')' => stack.push(Value::Tuple(Rc::default())),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool),
            0x89 => stack.push(Value::Bool),
            b'K' => stack.push(Value::Int(le(take(&mut i, 1)?) as i64)),
            b'M' => stack.push(Value::Int(le(take(&mut i, 2)?) as i64)),
            b'J' => stack.push(Value::Int(le(take(&mut i, 4)?) as u32 as i32 as i64)),
            0x8a => {
                let n = le(take(&mut i, 1)?) as usize;
                if n > 8 {
                    return Err(fail(at, format!("a {n}-byte integer")));
                }
                let v = le(take(&mut i, n)?);
                // Two's complement of n bytes, sign-extended.
                let v = if n > 0 && n < 8 && v >> (8 * n - 1) & 1 == 1 { v | (!0u64 << (8 * n)) } else { v };
                stack.push(Value::Int(v as i64));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => le(take(&mut i, 4)?),
                    0x8c => le(take(&mut i, 1)?),
                    _ => le(take(&mut i, 8)?),
                };
                let s = take(&mut i, n.min(p.len() as u64) as usize)?;
                let s = std::str::from_utf8(s).map_err(|_| fail(at, "a string that is not UTF-8".into()))?;
                stack.push(Value::Str(s.into()));
            }
            b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'q' => le(take(&mut i, 1)?),
                    b'r' => le(take(&mut i, 4)?),
                    _ => memo.len() as u64,
                };
                memo.insert(k, stack.last().ok_or_else(underflow)?.clone());
            }
            b'h' | b'j' => {
                let k = le(take(&mut i, if op == b'h' { 1 } else { 4 })?);
                stack.push(memo.get(&k).ok_or_else(|| fail(at, format!("memo entry {k} was never stored")))?.clone());
            }
            b'c' | 0x93 => {
                let (module, name) = if op == b'c' {
                    let line = |i: &mut usize| -> Result<String> {
                        let end = p[*i..]
                            .iter()
                            .position(|&c| c == b'\n')
                            .ok_or_else(|| fail(*i, "truncated GLOBAL".into()))?;
                        let s = String::from_utf8_lossy(&p[*i..*i + end]).into_owned();
                        *i += end + 1;
                        Ok(s)
                    };
                    (line(&mut i)?, line(&mut i)?)
                } else {
                    match (stack.pop(), stack.pop()) {
                        (Some(Value::Str(n)), Some(Value::Str(m))) => (m.to_string(), n.to_string()),
                        _ => return Err(fail(at, "STACK_GLOBAL without two strings".into())),
                    }
                };
                let g = global(&module, &name).ok_or_else(|| {
                    fail(
                        at,
                        format!(
                            "the pickle names '{module}.{name}', which a state dict of tensors never names; \
                             refused (nothing a pickle names is ever imported or run)"
                        ),
                    )
                })?;
                stack.push(Value::Global(g));
            }
            b't' | 0x85 | 0x86 | 0x87 => {
                let items = if op == b't' {
                    pop_mark(&mut stack).ok_or_else(|| fail(at, "TUPLE without a mark".into()))?
                } else {
                    let n = (op - 0x84) as usize;
                    if stack.len() < n {
                        return Err(underflow());
                    }
                    stack.split_off(stack.len() - n)
                };
                if items.iter().any(|v| matches!(v, Value::Mark)) {
                    return Err(fail(at, "a mark inside a tuple".into()));
                }
                stack.push(Value::Tuple(Rc::new(items)));
            }
            b's' | b'u' => {
                let items = if op == b'u' {
                    pop_mark(&mut stack).ok_or_else(|| fail(at, "SETITEMS without a mark".into()))?
                } else {
                    if stack.len() < 3 {
                        return Err(underflow());
                    }
                    stack.split_off(stack.len() - 2)
                };
                let Some(Value::Dict(d)) = stack.last() else {
                    return Err(fail(at, "SETITEMS on something that is not a dict".into()));
                };
                if items.len() % 2 != 0 {
                    return Err(fail(at, "SETITEMS with an odd number of items".into()));
                }
                let mut d = d.borrow_mut();
                for kv in items.chunks_exact(2) {
                    d.push((kv[0].clone(), kv[1].clone()));
                }
            }
            b'b' => {
                // BUILD on an OrderedDict sets its attributes (a state dict's `_metadata`):
                // the state is dropped.
                let state = stack.pop().ok_or_else(underflow)?;
                match (stack.last(), &state) {
                    (Some(Value::Dict(_)), Value::Dict(_) | Value::None) => {}
                    (obj, _) => {
                        return Err(fail(
                            at,
                            format!("BUILD of {} with {}", obj.map_or("nothing", |o| o.what()), state.what()),
                        ))
                    }
                }
            }
            b'Q' => {
                let pid = stack.pop().ok_or_else(underflow)?;
                let bad = || fail(at, "a persistent id that is not ('storage', type, key, location, numel)".into());
                let Value::Tuple(t) = pid else { return Err(bad()) };
                match &t[..] {
                    [Value::Str(tag), Value::Global(Global::StorageType(dtype)), Value::Str(key), Value::Str(_), Value::Int(n)]
                        if &**tag == "storage" && *n >= 0 =>
                    {
                        stack.push(Value::Storage(Rc::new(StorageRef {
                            dtype: *dtype,
                            key: key.to_string(),
                            numel: *n as u64,
                        })))
                    }
                    _ => return Err(bad()),
                }
            }
            b'R' => {
                let (args, f) = (stack.pop(), stack.pop());
                let (Some(Value::Tuple(args)), Some(Value::Global(g))) = (args, f) else {
                    return Err(fail(at, "REDUCE of something other than a known name and a tuple".into()));
                };
                let v = match (g, &args[..]) {
                    (Global::OrderedDict, []) => Value::Dict(Rc::default()),
                    (
                        Global::RebuildTensor,
                        [Value::Storage(s), Value::Int(off), Value::Tuple(size), Value::Tuple(stride), Value::Bool, _, ..],
                    ) if *off >= 0 => {
                        let ints = |t: &[Value]| -> Option<Vec<u64>> {
                            t.iter()
                                .map(|v| if let Value::Int(n) = v { u64::try_from(*n).ok() } else { None })
                                .collect()
                        };
                        let (Some(size), Some(stride)) = (ints(size), ints(stride)) else {
                            return Err(fail(at, "a tensor whose size or stride is not a tuple of integers".into()));
                        };
                        Value::Tensor(Rc::new(TensorRef { storage: s.clone(), offset: *off as u64, size, stride }))
                    }
                    (g, _) => return Err(fail(at, format!("{g:?} called with arguments it never takes"))),
                };
                stack.push(v);
            }
            b'.' => break,
            _ => return Err(fail(at, format!("opcode 0x{op:02x}, which a state dict of tensors never uses"))),
        }
    }
    let top = match (stack.pop(), stack.is_empty()) {
        (Some(Value::Dict(d)), true) => d,
        (v, _) => {
            return Err(Error::format(format!(
                "{what}: the pickle holds {}, not a dict of tensors",
                v.map_or("nothing", |v| v.what())
            )))
        }
    };
    let items = top.borrow();
    items
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Ok((k.to_string(), t.clone())),
            (Value::Str(k), v) => Err(Error::format(format!("{what}: entry '{k}' is {}, not a tensor", v.what()))),
            (k, _) => Err(Error::format(format!("{what}: a key that is {}, not a string", k.what()))),
        })
        .collect()
}

/// Opens the `.pth` at `path` (memory-mapped when `use_mmap`) as a record of tensors under
/// the names its state dict gives them.
pub fn open(path: &Path, use_mmap: bool) -> Result<SafetensorsFile> {
    let storage = if use_mmap { Storage::map(path)? } else { Storage::read(path)? };
    parse(Arc::new(storage), &path.display().to_string())
}

/// Parses a `.pth` archive held in `storage`; `name` is used in messages.
pub fn parse(storage: Arc<Storage>, name: &str) -> Result<SafetensorsFile> {
    let b = storage.bytes();
    let entries = zip_entries(b, name)?;
    // One folder holds data.pkl; an archive with another one, or holding archives, is not
    // what torch.save writes.
    let pkls: Vec<&ZipEntry> =
        entries.iter().filter(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl")).collect();
    let pkl = match pkls[..] {
        [one] => one,
        [] => {
            return Err(Error::format(format!("{name}: a zip archive without data.pkl (not a torch.save checkpoint)")))
        }
        _ => {
            return Err(Error::format(format!(
                "{name}: nested archives: {} data.pkl entries ('{}', '{}', …)",
                pkls.len(),
                pkls[0].name,
                pkls[1].name
            )))
        }
    };
    let folder = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    if folder.matches('/').count() > 1 {
        return Err(Error::format(format!("{name}: nested archives: '{}' is not at the archive's top", pkl.name)));
    }
    if let Some(e) = entries.iter().find(|e| {
        !e.name.starts_with(folder)
            || [".pth", ".pt", ".zip", ".tar"].iter().any(|x| e.name.ends_with(x))
            || b[e.start..e.start + e.len].starts_with(MAGIC)
    }) {
        return Err(Error::format(format!(
            "{name}: nested archives: entry '{}' is not part of one checkpoint",
            e.name
        )));
    }
    let by_name: HashMap<&str, &ZipEntry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    if let Some(e) = by_name.get(format!("{folder}byteorder").as_str()) {
        let order = &b[e.start..e.start + e.len];
        if order != b"little" {
            return Err(Error::unsupported(format!(
                "{name}: byte order '{}'; only little-endian checkpoints are read",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let what = format!("{name}: {}", pkl.name);
    let items = unpickle(&b[pkl.start..pkl.start + pkl.len], &what)?;
    let mut tensors = BTreeMap::new();
    for (key, t) in items {
        let s = &t.storage;
        let es = s.dtype.size_of(1) as u64;
        let entry_name = format!("{folder}data/{}", s.key);
        let e = by_name.get(entry_name.as_str()).ok_or_else(|| {
            Error::format(format!("{name}: tensor '{key}': storage '{}' has no entry in the archive", s.key))
        })?;
        if s.numel.checked_mul(es) != Some(e.len as u64) {
            return Err(Error::format(format!(
                "{name}: tensor '{key}': storage '{}' holds {} bytes, but its pickle says {} elements of {:?}",
                s.key, e.len, s.numel, s.dtype
            )));
        }
        // Only contiguous (row-major) views: what a state dict of parameters holds.
        let mut want = 1u64;
        for (d, (&n, &st)) in t.size.iter().zip(&t.stride).enumerate().rev() {
            if n != 1 && st != want {
                return Err(Error::unsupported(format!(
                    "{name}: tensor '{key}' is not contiguous (size {:?}, stride {:?} at dimension {d})",
                    t.size, t.stride
                )));
            }
            want = want.saturating_mul(n);
        }
        let numel = t.size.iter().try_fold(1u64, |a, &n| a.checked_mul(n));
        let end = numel.and_then(|n| n.checked_add(t.offset));
        if t.size.len() != t.stride.len() || end.is_none_or(|end| end > s.numel) {
            return Err(Error::format(format!(
                "{name}: tensor '{key}' (size {:?} at offset {}) reaches past its storage '{}' of {} elements",
                t.size, t.offset, s.key, s.numel
            )));
        }
        let start = e.start + (t.offset * es) as usize;
        let len = (numel.unwrap_or(0) * es) as usize;
        let shape = t.size.iter().map(|&n| n as usize).collect();
        let tensor =
            Tensor::new(&key, s.dtype, shape, storage.clone(), start..start + len).map_err(|e| e.context(name))?;
        if tensors.insert(key.clone(), tensor).is_some() {
            return Err(Error::format(format!("{name}: tensor '{key}' appears twice")));
        }
    }
    Ok(SafetensorsFile {
        name: name.to_string(),
        tensors,
        metadata: HashMap::new(),
        n_bytes: b.len(),
        quant: None,
        format: Format::Pth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pickle naming any callable outside the state-dict vocabulary is refused by name,
    /// before anything else happens.
    #[test]
    fn foreign_globals_are_refused() {
        let p = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let e = unpickle(p, "x.pth").unwrap_err();
        assert!(e.to_string().contains("'os.system'"), "{e}");
        let e = unpickle(b"\x80\x02\x8c\x08builtins\x8c\x04eval\x93.", "x.pth").unwrap_err();
        assert!(e.to_string().contains("'builtins.eval'"), "{e}");
    }

    /// Opcodes outside the vocabulary, truncation and non-dict results are format errors.
    #[test]
    fn other_pickles_are_refused() {
        for (p, want) in [
            (&b"\x80\x02]."[..], "opcode 0x5d"),
            (&b"\x80\x02}X\x05\x00\x00"[..], "truncated"),
            (&b"\x80\x02K\x01."[..], "an integer, not a dict"),
            (&b"\x80\x02}(X\x01\x00\x00\x00aK\x01u."[..], "entry 'a' is an integer"),
            (&b"\x80\x02h\x07."[..], "memo entry 7"),
        ] {
            let e = unpickle(p, "x.pth").unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }
}
