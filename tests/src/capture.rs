//! Capturing frames on an interface inside a test namespace (AF_PACKET).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::NetNs;

/// Frames seen on one interface until [`Capture::stop`].
pub struct Capture {
    frames: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing every frame on `ifname` in `ns`.
    pub fn start(ns: &NetNs, ifname: &str) -> Self {
        let file = ns.file();
        let ifname = std::ffi::CString::new(ifname).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd as _;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // SAFETY: plain socket(2)/if_nametoindex(3)/bind(2)/recv(2) calls on
            // a descriptor this thread owns.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                );
                assert!(fd >= 0, "AF_PACKET socket");
                let fd = OwnedFd::from_raw_fd(fd);
                let index = libc::if_nametoindex(ifname.as_ptr());
                assert!(index > 0, "interface {ifname:?}");
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                sll.sll_ifindex = index as i32;
                let rc = libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind AF_PACKET");
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                ready_tx.send(()).unwrap();
                let mut buf = vec![0u8; 65536];
                while !s.load(Ordering::Relaxed) {
                    let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n > 0 {
                        f.lock().unwrap().extend_from_slice(&buf[..n as usize]);
                    }
                }
            }
        });
        ready_rx.recv().expect("capture thread started");
        Capture {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns every captured byte, frames concatenated.
    pub fn stop(mut self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.frames.lock().unwrap())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
