//! Dropping root, for the processes that parse what the network sends
//! (ftp-proxy's sessions, the greylisting service's capture and policy
//! requests), as OpenBSD's daemons and p0f's `-u` do: chroot to an empty
//! directory, every user and group id to an unprivileged user, no
//! supplementary groups, no new privileges; checked that root cannot be
//! regained.

use std::path::{Path, PathBuf};

/// An unprivileged user to run as.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Look `name` up in the user database (before the chroot).
pub fn lookup_user(name: &str) -> Result<User, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("'{name}': not a user name"))?;
    // SAFETY: getpwnam_r fills `pw` with pointers into `buf`, which both
    // outlive their use below; `out` tells whether an entry was found.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
        if r != 0 {
            return Err(format!("{name}: {}", std::io::Error::from_raw_os_error(r)));
        }
        if out.is_null() {
            return Err(format!("{name}: no such user"));
        }
        if pw.pw_uid == 0 {
            return Err(format!("{name}: uid 0: not an unprivileged user"));
        }
        Ok(User {
            name: name.to_string(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        })
    }
}

/// The empty directory a process without privileges is chrooted to:
/// OpenBSD's `/var/empty` where it exists and is fit (belongs to root,
/// writable by nobody else, holds nothing: some systems keep sshd's
/// chroot in it), else `/run/palisade/empty` (created), which must be.
pub fn empty_root() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let var = Path::new("/var/empty");
    if var.is_dir() && fit(var).is_ok() {
        return Ok(var.to_path_buf());
    }
    let d = PathBuf::from("/run/palisade/empty");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", d.display()))?;
    fit(&d)?;
    Ok(d)
}

/// Whether `dir` may serve as a chroot without privileges.
fn fit(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: the chroot for processes without privileges must belong to root and be writable by root only",
            dir.display()
        ));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "{}: the chroot for processes without privileges must be empty",
            dir.display()
        ));
    }
    Ok(())
}

/// No new privileges for the calling thread and those it starts after.
pub fn no_new_privs() -> Result<(), String> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Chroot to `root` and become `user`: every id, no supplementary
/// groups, `no_new_privs` (for the calling thread and those it starts
/// after; the ids change for every thread, as glibc does it). Checked:
/// root cannot be regained.
pub fn become_user(user: &User, root: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::ffi::CString::new(root.as_os_str().as_bytes())
        .map_err(|_| format!("{}: not a path", root.display()))?;
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on values that live through each call.
    unsafe {
        if libc::chroot(dir.as_ptr()) != 0 {
            return Err(os(&format!("chroot {}", root.display())));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(os("chdir /"));
        }
        let groups = [user.gid];
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err(os("setgroups"));
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return Err(os("setresgid"));
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return Err(os("setresuid"));
        }
        if libc::setuid(0) == 0 || libc::geteuid() == 0 {
            return Err("root could be regained after dropping it".into());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os("prctl(PR_SET_NO_NEW_PRIVS)"));
        }
    }
    Ok(())
}
