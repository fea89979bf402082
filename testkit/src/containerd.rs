//! A real container runtime for the scenario tests (root): a private containerd with runc,
//! a tiny OCI image built here from Debian's `busybox-static` (nothing can be pulled), a
//! CNI network installed where `ctr run --cni` looks for it, and containers run with
//! `ctr run --rm --cni` whose standard input and output the test holds.
//!
//! Why it is shaped this way:
//!
//! - **containerd runs in the caller's network namespace**, not under `ip netns exec`:
//!   that remounts `/sys`, and runc then finds no cgroup hierarchy to put containers in.
//!   A container gets a new network namespace of its own anyway; the CNI plugin moves
//!   what it needs wherever it needs it.
//! - **Everything containerd keeps is under one directory** `{temp}/weir-containerd-{pid}`
//!   (root, state, the gRPC and ttrpc sockets, runc's state, the I/O FIFOs), its
//!   containers live in the containerd namespace `weir-{pid}` and in the cgroup
//!   `/weir-ctr-{pid}`. The CRI plugin, the optional snapshotters, `/opt/containerd` and
//!   tracing are off. Snapshots use the `native` snapshotter (plain copies): no overlay
//!   mount can outlive a failed test, and the image is 2 MB.
//! - **`ctr run --cni` reads only the fixed paths** in containerd 1.6 (go-cni's defaults:
//!   the first configuration file in `/etc/cni/net.d` by name, plugins in `/opt/cni/bin`;
//!   no flag or environment variable changes them, and the CRI plugin's `[cni]` section
//!   is not read by `ctr`). So [`CniNetwork`] installs `00-weir-test-{pid}.conflist`
//!   naming the plugin `weir-cni-{pid}` (a symbolic link to the binary under test), checks
//!   that no other configuration sorts before it, and removes both, with libcni's cached
//!   results for the network, when it drops. Only one such test can run on a machine at a
//!   time; a second one fails at once, naming the file in its way.
//! - containerd 1.6 puts the shims' sockets in `/run/containerd/s` whatever its state
//!   directory is; the guard removes that directory (and `/run/containerd`) when it made
//!   them and they are empty.
//!
//! [`Containerd`]'s guard, when it drops: kills and deletes the namespace's tasks, deletes
//! its containers (with their snapshots), images and remaining snapshots, stops the daemon
//! (SIGTERM, SIGKILL after 5 s, by its pid), unmounts anything still mounted under its
//! directory, removes the directory and the cgroups.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::lab::{output, run, ChildGuard, LabError};

/// Where go-cni (and so `ctr run --cni`) reads network configurations.
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Where go-cni looks for plugins.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Where libcni caches results (its default, which go-cni keeps).
pub const CNI_CACHE_DIR: &str = "/var/lib/cni";
/// The busybox of Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// A containerd of this process, stopped (with everything it made) when dropped.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    namespace: String,
    cgroup_parent: String,
    daemon: Option<ChildGuard>,
    /// Directories under `/run` that did not exist before containerd started.
    made_run_dirs: Vec<PathBuf>,
}

impl Containerd {
    /// Starts containerd with its own directories under `{temp}/weir-containerd-{pid}`
    /// (what an earlier process of the same pid left there is removed first) and waits
    /// until it answers (10 s at most).
    pub fn start() -> Result<Containerd, LabError> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("weir-containerd-{pid}"));
        unmount_under(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["root", "state", "runc", "fifo", "image"] {
            create_dir(&dir.join(sub))?;
        }
        let made_run_dirs = [Path::new("/run/containerd"), Path::new("/run/containerd/s")]
            .into_iter()
            .filter(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        let config = dir.join("config.toml");
        write(&config, &config_toml(&dir))?;
        let log = dir.join("containerd.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| LabError::new(format!("creating {}: {e}", log.display())))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                LabError::new(format!(
                    "cannot start containerd: {e} (Debian package `containerd`)"
                ))
            })?;
        let mut containerd = Containerd {
            dir,
            namespace: format!("weir-{pid}"),
            cgroup_parent: format!("weir-ctr-{pid}"),
            daemon: Some(ChildGuard::with_grace(child, Duration::from_secs(5))),
            made_run_dirs,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = containerd.daemon.as_mut().map(|d| d.child().try_wait())
            {
                return Err(LabError::new(format!(
                    "containerd exited at start ({status}): {}",
                    containerd.log()
                )));
            }
            let answer = output(&strs(&containerd.ctr_argv(&["version"])))?;
            if answer.status.success() {
                return Ok(containerd);
            }
            if Instant::now() > deadline {
                return Err(LabError::new(format!(
                    "containerd did not answer within 10 s: {}\n{}",
                    String::from_utf8_lossy(&answer.stderr).trim(),
                    containerd.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gRPC socket `ctr` talks to.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The containerd namespace the containers live in (`weir-{pid}`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name go-cni gives a container's attachment: `{namespace}-{id}` (`CNI_CONTAINERID`).
    pub fn cni_container_id(&self, id: &str) -> String {
        format!("{}-{id}", self.namespace)
    }

    /// What containerd logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr ARGS` against this containerd and namespace, which must succeed; its stdout.
    pub fn ctr(&self, args: &[&str]) -> Result<String, LabError> {
        run(&strs(&self.ctr_argv(args)))
    }

    /// Builds the busybox image (see [`write_busybox_image`]) and imports it as
    /// `reference`.
    pub fn import_busybox(&self, reference: &str) -> Result<(), LabError> {
        let archive = write_busybox_image(&self.dir.join("image"), reference)?;
        let archive = archive.to_string_lossy();
        self.ctr(&["image", "import", "--snapshotter", "native", &archive])?;
        let images = self.ctr(&["image", "ls", "-q"])?;
        if !images.lines().any(|l| l.trim() == reference) {
            return Err(LabError::new(format!(
                "ctr image import did not make {reference}: {images}"
            )));
        }
        Ok(())
    }

    /// Runs `argv` in a new container `id` of `image`, as `ctr run --rm [--cni]` does in
    /// the foreground (the CNI ADD before the task starts, the DEL after it exited); the
    /// container's standard input and output are the returned handle's.
    pub fn run(
        &self,
        image: &str,
        id: &str,
        cni: bool,
        argv: &[&str],
    ) -> Result<Container, LabError> {
        let fifo = self.dir.join("fifo");
        let runc = self.dir.join("runc");
        let cgroup = format!("/{}/{id}", self.cgroup_parent);
        let mut args = vec!["run", "--rm"];
        if cni {
            args.push("--cni");
        }
        args.extend([
            "--snapshotter",
            "native",
            "--fifo-dir",
            fifo.to_str().unwrap_or_default(),
            "--runc-root",
            runc.to_str().unwrap_or_default(),
            "--cgroup",
            &cgroup,
            image,
            id,
        ]);
        args.extend(argv);
        let argv = self.ctr_argv(&args);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::new(format!("cannot start ctr: {e}")))?;
        let (lines, from_reader) = mpsc::channel();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let readers = vec![
            std::thread::spawn({
                let lines = lines.clone();
                move || forward_lines(stdout, &lines)
            }),
            std::thread::spawn(move || forward_lines(stderr, &lines)),
        ];
        Ok(Container {
            id: id.to_owned(),
            ctr: self.ctr_argv(&[]),
            stdin: child.stdin.take(),
            child: Some(child),
            lines: from_reader,
            seen: Vec::new(),
            readers,
        })
    }

    fn ctr_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "ctr".to_owned(),
            "--address".to_owned(),
            self.socket().to_string_lossy().into_owned(),
            "--namespace".to_owned(),
            self.namespace.clone(),
            // A local socket answers at once; ctr's own default waits 10 s for a dead one.
            "--connect-timeout".to_owned(),
            "5s".to_owned(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    fn ctr_quiet(&self, args: &[&str]) -> Vec<String> {
        run(&strs(&self.ctr_argv(args)))
            .map(|out| out.lines().map(|l| l.trim().to_owned()).collect())
            .unwrap_or_default()
    }

    fn remove_everything(&self) {
        let ctr = |args: &[&str]| {
            let _ = output(&strs(&self.ctr_argv(args)));
        };
        for task in self.ctr_quiet(&["task", "ls", "-q"]) {
            ctr(&["task", "kill", "--signal", "SIGKILL", &task]);
        }
        for task in self.ctr_quiet(&["task", "ls", "-q"]) {
            ctr(&["task", "delete", "--force", &task]);
        }
        for container in self.ctr_quiet(&["container", "ls", "-q"]) {
            ctr(&["container", "rm", &container]);
        }
        for image in self.ctr_quiet(&["image", "ls", "-q"]) {
            ctr(&["image", "rm", "--sync", &image]);
        }
        // Children before parents: a few rounds remove a chain of any length we make.
        for _ in 0..4 {
            let snapshots = self.ctr_quiet(&["snapshot", "--snapshotter", "native", "ls"]);
            let keys: Vec<&str> = snapshots
                .iter()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            if keys.is_empty() {
                break;
            }
            for key in keys {
                ctr(&["snapshot", "--snapshotter", "native", "rm", key]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let running = self
            .daemon
            .as_mut()
            .is_some_and(|d| matches!(d.child().try_wait(), Ok(None)));
        if running {
            self.remove_everything();
        }
        self.daemon.take();
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        remove_cgroups(&self.cgroup_parent);
        for dir in self.made_run_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A container run by [`Containerd::run`]: `ctr run` in the foreground, its standard input
/// ours to write and close, its output lines collected as they come. Dropped while running,
/// its task is killed (SIGKILL through containerd) and `ctr` reaped.
#[derive(Debug)]
pub struct Container {
    id: String,
    ctr: Vec<String>,
    stdin: Option<ChildStdin>,
    child: Option<Child>,
    lines: Receiver<String>,
    seen: Vec<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Container {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits (at most `within`) for a line of its output (stdout or stderr, and `ctr`'s own)
    /// that contains `marker`; returns every line seen so far. The error carries them.
    pub fn wait_for(&mut self, marker: &str, within: Duration) -> Result<Vec<String>, LabError> {
        let deadline = Instant::now() + within;
        if self.seen.iter().any(|l| l.contains(marker)) {
            return Ok(self.seen.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(marker);
                    self.seen.push(line);
                    if found {
                        return Ok(self.seen.clone());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(LabError::new(format!(
                        "container {}: no line with {marker:?} within {within:?}; output:\n{}",
                        self.id,
                        self.seen.join("\n")
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LabError::new(format!(
                        "container {}: ended without a line with {marker:?}; output:\n{}",
                        self.id,
                        self.seen.join("\n")
                    )))
                }
            }
        }
    }

    /// Writes `text` to its standard input.
    pub fn write_stdin(&mut self, text: &str) -> Result<(), LabError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| LabError::new(format!("container {}: stdin closed", self.id)))?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| LabError::new(format!("container {}: stdin: {e}", self.id)))
    }

    /// Closes its standard input and waits (at most `within`) for `ctr run` to end (the
    /// container exited, `ctr` ran the CNI DEL and removed it); past `within` the task is
    /// killed and that is an error. Returns `ctr`'s exit status and every output line.
    pub fn finish(&mut self, within: Duration) -> Result<(ExitStatus, Vec<String>), LabError> {
        self.stdin.take();
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| LabError::new(format!("container {}: already finished", self.id)))?;
        let deadline = Instant::now() + within;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    self.kill();
                    return Err(LabError::new(format!(
                        "container {}: still running after {within:?}; killed; output:\n{}",
                        self.id,
                        self.seen.join("\n")
                    )));
                }
                Err(e) => return Err(LabError::new(format!("waiting for ctr: {e}"))),
            }
        };
        self.child.take();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.seen.extend(self.lines.try_iter());
        Ok((status, self.seen.clone()))
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut argv = strs(&self.ctr);
        argv.extend(["task", "kill", "--signal", "SIGKILL", &self.id]);
        let _ = output(&argv);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}

/// A CNI network installed where `ctr run --cni` finds it (see the module doc): the
/// conflist `/etc/cni/net.d/00-weir-test-{pid}.conflist` (network `weir-test-{pid}`, CNI
/// 1.0.0) with one plugin of type `weir-cni-{pid}`, a symbolic link in `/opt/cni/bin` to
/// the plugin's binary. Removed when dropped, with libcni's cached results for the
/// network and the directories it had to make (when empty).
#[derive(Debug)]
pub struct CniNetwork {
    name: String,
    conflist: PathBuf,
    plugin: PathBuf,
    made_dirs: Vec<PathBuf>,
}

impl CniNetwork {
    /// Installs `binary` as plugin `weir-cni-{pid}` with `config` (a JSON object: the
    /// plugin's keys but `type`). Fails when a configuration file in `/etc/cni/net.d`
    /// sorts before ours, since go-cni would use that one instead.
    pub fn install(binary: &Path, config: serde_json::Value) -> Result<CniNetwork, LabError> {
        let pid = std::process::id();
        let name = format!("weir-test-{pid}");
        let kind = format!("weir-cni-{pid}");
        let mut made_dirs = Vec::new();
        for dir in [
            Path::new("/etc/cni"),
            Path::new(CNI_CONF_DIR),
            Path::new("/opt/cni"),
            Path::new(CNI_BIN_DIR),
            Path::new(CNI_CACHE_DIR),
        ] {
            if !dir.exists() {
                create_dir(dir)?;
                made_dirs.push(dir.to_path_buf());
            }
        }
        let mut plugin_conf = match config {
            serde_json::Value::Object(map) => map,
            other => {
                return Err(LabError::new(format!(
                    "a plugin's configuration is a JSON object, not {other}"
                )))
            }
        };
        plugin_conf.insert("type".into(), kind.clone().into());
        let conflist = Path::new(CNI_CONF_DIR).join(format!("00-{name}.conflist"));
        let plugin = Path::new(CNI_BIN_DIR).join(&kind);
        let network = CniNetwork {
            name: name.clone(),
            conflist: conflist.clone(),
            plugin: plugin.clone(),
            made_dirs,
        };
        let _ = std::fs::remove_file(&plugin);
        std::os::unix::fs::symlink(binary, &plugin).map_err(|e| {
            LabError::new(format!(
                "linking {} to {}: {e}",
                plugin.display(),
                binary.display()
            ))
        })?;
        let text = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [plugin_conf],
        });
        write(&conflist, &text.to_string())?;
        let first = first_conf_file(Path::new(CNI_CONF_DIR))?;
        if first.as_deref() != Some(conflist.as_path()) {
            return Err(LabError::new(format!(
                "{} sorts before {} in {CNI_CONF_DIR}, and `ctr run --cni` uses only the first \
                 file: remove it (a leftover of another weir test run, when its pid is gone)",
                first.unwrap_or_default().display(),
                conflist.display()
            )));
        }
        Ok(network)
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for CniNetwork {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.conflist);
        let _ = std::fs::remove_file(&self.plugin);
        let results = Path::new(CNI_CACHE_DIR).join("results");
        if let Ok(entries) = std::fs::read_dir(&results) {
            let prefix = format!("{}-", self.name);
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        for dir in self.made_dirs.iter().rev() {
            if dir == Path::new(CNI_CACHE_DIR) {
                let _ = std::fs::remove_dir(results.clone());
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Writes an OCI image archive `dir/busybox-oci.tar` that `ctr image import` takes: an OCI
/// image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) holding one manifest,
/// named `reference` by the `io.containerd.image.name` annotation; its config (this
/// machine's architecture, `PATH=/bin`) and one uncompressed layer: `/bin/busybox` from
/// `busybox-static` with a symbolic link for each applet it lists (sh, ping, wget, nc,
/// httpd, ip, …). Returns the archive's path.
pub fn write_busybox_image(dir: &Path, reference: &str) -> Result<PathBuf, LabError> {
    if !Path::new(BUSYBOX).exists() {
        return Err(LabError::new(format!(
            "{BUSYBOX} is missing: install the Debian package `busybox-static`"
        )));
    }
    let rootfs = dir.join("rootfs");
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    let _ = std::fs::remove_dir_all(&rootfs);
    let _ = std::fs::remove_dir_all(&layout);
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        create_dir(&rootfs.join(d))?;
    }
    create_dir(&blobs)?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .map_err(|e| LabError::new(format!("copying {BUSYBOX}: {e}")))?;
    for applet in run(&[BUSYBOX, "--list"])?.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = rootfs.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link)
            .map_err(|e| LabError::new(format!("linking {}: {e}", link.display())))?;
    }
    write(&rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    write(&rootfs.join("etc/group"), "root:x:0:\n")?;

    let layer = dir.join("layer.tar");
    let (rootfs_s, layer_s) = (rootfs.to_string_lossy(), layer.to_string_lossy());
    run(&[
        "tar",
        "--create",
        "--file",
        &layer_s,
        "--directory",
        &rootfs_s,
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--sort=name",
        ".",
    ])?;
    let layer = add_blob(&blobs, &layer)?;
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    });
    let config = add_json_blob(&blobs, dir, "config.json", &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.digest,
            "size": layer.size,
        }],
    });
    let manifest = add_json_blob(&blobs, dir, "manifest.json", &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {"io.containerd.image.name": reference},
        }],
    });
    write(&layout.join("index.json"), &index.to_string())?;
    write(
        &layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = dir.join("busybox-oci.tar");
    let (archive_s, layout_s) = (archive.to_string_lossy(), layout.to_string_lossy());
    run(&[
        "tar",
        "--create",
        "--file",
        &archive_s,
        "--directory",
        &layout_s,
        ".",
    ])?;
    Ok(archive)
}

struct Blob {
    digest: String,
    size: u64,
}

fn add_blob(blobs: &Path, file: &Path) -> Result<Blob, LabError> {
    let file_s = file.to_string_lossy();
    let sum = run(&["sha256sum", &file_s])?;
    let hex = sum
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| LabError::new(format!("sha256sum {file_s}: {sum:?}")))?
        .to_owned();
    let size = std::fs::metadata(file)
        .map_err(|e| LabError::new(format!("{file_s}: {e}")))?
        .len();
    std::fs::copy(file, blobs.join(&hex))
        .map_err(|e| LabError::new(format!("copying {file_s} into the layout: {e}")))?;
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size,
    })
}

fn add_json_blob(
    blobs: &Path,
    dir: &Path,
    name: &str,
    value: &serde_json::Value,
) -> Result<Blob, LabError> {
    let path = dir.join(name);
    write(&path, &value.to_string())?;
    add_blob(blobs, &path)
}

/// The OCI (Go) name of this machine's architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd-ttrpc.sock"

[debug]
  address = ""

[metrics]
  address = ""
"#
    )
}

/// The configuration file go-cni picks in `dir`: the first by name of those ending in
/// `.conf`, `.conflist` or `.json` (libcni's `ConfFiles`, sorted).
fn first_conf_file(dir: &Path) -> Result<Option<PathBuf>, LabError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LabError::new(format!("reading {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files.into_iter().next())
}

fn forward_lines(from: Option<impl std::io::Read>, to: &mpsc::Sender<String>) {
    let Some(from) = from else { return };
    for line in BufReader::new(from).lines() {
        match line {
            Ok(line) => {
                if to.send(line).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Unmounts (lazily) whatever is mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = output(&["umount", "--lazy", point]);
    }
}

/// Removes the (empty) cgroup `parent` and its children from every hierarchy: cgroup v1
/// (one directory per controller) and v2.
fn remove_cgroups(parent: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut bases = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        bases.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for base in bases {
        let dir = base.join(parent);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn strs(argv: &[String]) -> Vec<&str> {
    argv.iter().map(String::as_str).collect()
}

fn create_dir(dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LabError::new(format!("creating {}: {e}", dir.display())))
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text)
        .map_err(|e| LabError::new(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed when the guard drops, also when the test fails.
    fn scratch(name: &str) -> (crate::lab::NetnsGuard, PathBuf) {
        let mut guard = crate::lab::NetnsGuard::new();
        let dir = guard.temp_dir(&format!("weir-testkit-{name}")).unwrap();
        (guard, dir)
    }

    fn json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The blob a descriptor names: its bytes match its digest and size.
    fn blob(layout: &Path, descriptor: &serde_json::Value) -> PathBuf {
        let digest = descriptor["digest"].as_str().unwrap();
        let path = layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        let sum = run(&["sha256sum", path.to_str().unwrap()]).unwrap();
        assert_eq!(format!("sha256:{}", &sum[..64]), digest);
        assert_eq!(
            Some(std::fs::metadata(&path).unwrap().len()),
            descriptor["size"].as_u64()
        );
        path
    }

    #[test]
    fn the_busybox_image_is_an_oci_layout_whose_descriptors_match_their_blobs() {
        if !Path::new(BUSYBOX).exists() {
            panic!("{BUSYBOX} is missing: apt-get install busybox-static (scripts/test.sh does)");
        }
        let (_guard, dir) = scratch("oci");
        let archive = write_busybox_image(&dir, "localhost/weir-busybox:unit").unwrap();
        let unpacked = dir.join("unpacked");
        std::fs::create_dir_all(&unpacked).unwrap();
        let (a, u) = (archive.to_str().unwrap(), unpacked.to_str().unwrap());
        run(&["tar", "--extract", "--file", a, "--directory", u]).unwrap();
        assert_eq!(
            json(&unpacked.join("oci-layout"))["imageLayoutVersion"],
            "1.0.0"
        );
        let index = json(&unpacked.join("index.json"));
        let descriptor = &index["manifests"][0];
        assert_eq!(
            descriptor["annotations"]["io.containerd.image.name"],
            "localhost/weir-busybox:unit"
        );
        let manifest = json(&blob(&unpacked, descriptor));
        let config = json(&blob(&unpacked, &manifest["config"]));
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], go_arch());
        let layer = &manifest["layers"][0];
        assert_eq!(config["rootfs"]["diff_ids"][0], layer["digest"]);
        let layer = blob(&unpacked, layer);
        let listing = run(&[
            "tar",
            "--list",
            "--verbose",
            "--file",
            layer.to_str().unwrap(),
        ])
        .unwrap();
        for applet in ["sh", "ping", "wget", "nc", "httpd", "ip"] {
            assert!(
                listing.contains(&format!("./bin/{applet} -> busybox")),
                "{applet}: {listing}"
            );
        }
        assert!(
            listing.contains(" 0/0 ") && listing.contains("./bin/busybox\n"),
            "{listing}"
        );
    }

    #[test]
    fn go_cni_takes_the_first_configuration_by_name() {
        let (_guard, dir) = scratch("netd");
        assert_eq!(first_conf_file(&dir).unwrap(), None);
        for name in ["10-b.conf", "00-weir.conflist", "README", "05-a.txt"] {
            write(&dir.join(name), "{}").unwrap();
        }
        assert_eq!(
            first_conf_file(&dir).unwrap(),
            Some(dir.join("00-weir.conflist"))
        );
        write(&dir.join("0-other.json"), "{}").unwrap();
        assert_eq!(
            first_conf_file(&dir).unwrap(),
            Some(dir.join("0-other.json"))
        );
    }
}
