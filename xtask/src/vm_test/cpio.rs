//! A writer for the `newc` cpio format the kernel unpacks as its initramfs.
//!
//! Written here rather than by the `cpio` tool so the archive can hold device
//! nodes (`/dev/console`) and root-owned files without staging a directory
//! tree as root, and so the archive's contents are exactly what was added.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// One archive member.
enum Entry {
    /// A directory.
    Dir,
    /// A regular file copied from the host.
    File { src: PathBuf, mode: u32 },
    /// A regular file with the given contents.
    Bytes { data: Vec<u8>, mode: u32 },
    /// A symbolic link to `target`.
    Symlink { target: String },
    /// A character device node.
    CharDev { major: u32, minor: u32 },
}

/// The members of an initramfs, keyed by absolute path; written in path order,
/// so every directory precedes its contents.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let path = normalise(path);
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry::Dir);
        }
    }

    /// Adds a copy of the host file `src` at `path` with permission bits `mode`.
    pub fn file(&mut self, path: &str, src: &Path, mode: u32) {
        self.insert(
            path,
            Entry::File {
                src: src.to_path_buf(),
                mode,
            },
        );
    }

    /// Adds a file with the given contents at `path`.
    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.insert(
            path,
            Entry::Bytes {
                data: data.into(),
                mode,
            },
        );
    }

    /// Adds a symbolic link at `path` pointing to `target`, unless `path` is already taken.
    pub fn symlink_if_absent(&mut self, path: &str, target: &str) {
        if !self.entries.contains_key(&normalise(path)) {
            self.insert(
                path,
                Entry::Symlink {
                    target: target.to_owned(),
                },
            );
        }
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.insert(path, Entry::CharDev { major, minor });
    }

    /// Whether something was added at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalise(path))
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = normalise(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(path, entry);
    }

    /// Writes the archive (uncompressed: the guest unpacks it faster than it would gunzip it).
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = Counting {
            inner: BufWriter::new(file),
            written: 0,
        };
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => header(&mut w, ino, 0o040755, 2, 0, (0, 0), path)?,
                Entry::File { src, mode } => {
                    let mut f =
                        File::open(src).with_context(|| format!("opening {}", src.display()))?;
                    let len = f.metadata()?.len();
                    let size = u32::try_from(len).with_context(|| {
                        format!("{} is too large for a cpio archive", src.display())
                    })?;
                    header(&mut w, ino, 0o100000 | mode, 1, size, (0, 0), path)?;
                    let copied = std::io::copy(&mut f, &mut w)?;
                    if copied != len {
                        bail!("{} changed size while being archived", src.display());
                    }
                    pad(&mut w)?;
                }
                Entry::Bytes { data, mode } => {
                    header(
                        &mut w,
                        ino,
                        0o100000 | mode,
                        1,
                        data.len() as u32,
                        (0, 0),
                        path,
                    )?;
                    w.write_all(data)?;
                    pad(&mut w)?;
                }
                Entry::Symlink { target } => {
                    header(&mut w, ino, 0o120777, 1, target.len() as u32, (0, 0), path)?;
                    w.write_all(target.as_bytes())?;
                    pad(&mut w)?;
                }
                Entry::CharDev { major, minor } => {
                    header(&mut w, ino, 0o020600, 1, 0, (*major, *minor), path)?
                }
            }
        }
        header(&mut w, 0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        w.inner.flush()?;
        Ok(w.written)
    }
}

/// A path without leading or trailing slashes, as cpio members are named.
fn normalise(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

/// A writer that counts bytes, for the 4-byte alignment newc requires.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one newc header and the member's name, padded.
fn header<W: Write>(
    w: &mut Counting<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> std::io::Result<()> {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut head = String::from("070701");
    for field in fields {
        head.push_str(&format!("{field:08x}"));
    }
    w.write_all(head.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

/// Pads to the next multiple of four bytes.
fn pad<W: Write>(w: &mut Counting<W>) -> std::io::Result<()> {
    let rem = (w.written % 4) as usize;
    if rem != 0 {
        w.write_all(&[0; 3][..4 - rem])?;
    }
    Ok(())
}
