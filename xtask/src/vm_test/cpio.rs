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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a newc archive back into (name, mode, rdev major, data) tuples.
    fn parse(bytes: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let field = |at: usize, i: usize| {
            let s = std::str::from_utf8(&bytes[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let align = |n: usize| n.div_ceil(4) * 4;
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
            let (mode, size, major, namesize) = (
                field(at, 1),
                field(at, 6) as usize,
                field(at, 9),
                field(at, 11) as usize,
            );
            let name_at = at + 110;
            let name = std::str::from_utf8(&bytes[name_at..name_at + namesize - 1]).unwrap();
            let data_at = align(name_at + namesize);
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((
                name.to_owned(),
                mode,
                major,
                bytes[data_at..data_at + size].to_vec(),
            ));
            at = align(data_at + size);
        }
    }

    #[test]
    fn archive_round_trips() {
        let dir = std::env::temp_dir().join(format!("nodemesh-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let host_file = dir.join("host");
        std::fs::write(&host_file, b"abcde").unwrap();
        let mut archive = Archive::default();
        archive.bytes("/init", "#!/bin/sh\n", 0o755);
        archive.file("/nodemesh/tests/t", &host_file, 0o755);
        archive.symlink_if_absent("/bin/sh", "busybox");
        archive.symlink_if_absent("/bin/sh", "other");
        archive.char_dev("/dev/console", 5, 1);
        let out = dir.join("out.cpio");
        let written = archive.write(&out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(written as usize, bytes.len());

        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "nodemesh",
                "nodemesh/tests",
                "nodemesh/tests/t"
            ]
        );
        let get = |name: &str| entries.iter().find(|e| e.0 == name).unwrap();
        assert_eq!(get("bin/sh").1, 0o120777);
        assert_eq!(get("bin/sh").3, b"busybox");
        assert_eq!(get("dev/console").1, 0o020600);
        assert_eq!(get("dev/console").2, 5);
        assert_eq!(get("init").3, b"#!/bin/sh\n");
        assert_eq!(get("nodemesh/tests/t").1, 0o100755);
        assert_eq!(get("nodemesh/tests/t").3, b"abcde");
        assert_eq!(get("nodemesh").1, 0o040755);
    }
}
