//! Finding a Pod's cgroup in the kubelet's cgroup2 hierarchy.
//!
//! The kubelet names pod cgroups after the Pod UID: with the cgroupfs
//! driver `kubepods/<qos>/pod<uid>`, with the systemd driver
//! `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice`,
//! possibly below a parent slice (`kubelet.slice/kubelet-kubepods.slice/…`
//! in some distributions).

use std::io;
use std::path::{Path, PathBuf};

/// How deep below the cgroup2 mount the search goes.
const MAX_DEPTH: usize = 5;

/// Finds the cgroup of the Pod with `pod_uid` under the cgroup2 mount
/// `cgroup_root`, returning its path relative to the mount. Only the
/// top-level directories whose names contain `kubepods` or `kubelet` are
/// searched.
pub fn find_pod_cgroup(cgroup_root: &Path, pod_uid: &str) -> io::Result<Option<String>> {
    let dashed = format!("pod{pod_uid}");
    let underscored = format!("pod{}", pod_uid.replace('-', "_"));
    let mut frontier: Vec<PathBuf> = vec![PathBuf::new()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for rel in frontier {
            let entries = match std::fs::read_dir(cgroup_root.join(&rel)) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.as_os_str().is_empty() => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let stem = name.strip_suffix(".slice").unwrap_or(name);
                if stem.ends_with(&dashed) || stem.ends_with(&underscored) {
                    return Ok(Some(rel.join(name).to_string_lossy().into_owned()));
                }
                if !rel.as_os_str().is_empty()
                    || name.contains("kubepods")
                    || name.contains("kubelet")
                {
                    next.push(rel.join(name));
                }
            }
        }
        if next.is_empty() {
            break;
        }
        next.sort();
        frontier = next;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2a9e-6a8b-4d2e-9c11-0a1b2c3d4e5f";

    fn mkdirs(root: &Path, paths: &[&str]) {
        for p in paths {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
    }

    #[test]
    fn finds_cgroupfs_layout() {
        let root = tempfile::tempdir().unwrap();
        mkdirs(
            root.path(),
            &[
                "kubepods/besteffort/podaaaa",
                &format!("kubepods/burstable/pod{UID}/container1"),
                "system.slice/pod_decoy",
            ],
        );
        assert_eq!(
            find_pod_cgroup(root.path(), UID).unwrap().as_deref(),
            Some(format!("kubepods/burstable/pod{UID}").as_str())
        );
    }

    #[test]
    fn finds_systemd_layout_with_underscores_and_guaranteed_pods() {
        let root = tempfile::tempdir().unwrap();
        let under = UID.replace('-', "_");
        let burstable =
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice");
        mkdirs(root.path(), &[&burstable]);
        assert_eq!(find_pod_cgroup(root.path(), UID).unwrap(), Some(burstable));

        let root = tempfile::tempdir().unwrap();
        let guaranteed =
            format!("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{under}.slice");
        mkdirs(root.path(), &[&guaranteed]);
        assert_eq!(find_pod_cgroup(root.path(), UID).unwrap(), Some(guaranteed));
    }

    #[test]
    fn unknown_pods_are_not_found_and_other_trees_not_searched() {
        let root = tempfile::tempdir().unwrap();
        mkdirs(
            root.path(),
            &[&format!("system.slice/pod{UID}"), "kubepods/burstable"],
        );
        assert_eq!(find_pod_cgroup(root.path(), UID).unwrap(), None);
        assert!(find_pod_cgroup(&root.path().join("missing"), UID).is_err());
    }
}
