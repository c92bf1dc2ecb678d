//! Local images for the Docker runtime, built without a registry.
//!
//! Each image is a root file system assembled from this machine's own files and handed
//! to the engine as `docker import` does (`POST /images/create?fromSrc=-`):
//! - `aiops-target-app:local`: the `target-app` binary (the same one the process runtime
//!   runs) at `/usr/local/bin/target-app`, the shared libraries `ldd` names, CA
//!   certificates;
//! - `aiops-postgres:local`: the host's PostgreSQL server (`postgres`, its `lib/` modules
//!   but the LLVM JIT, its `share/` dir, the time zone database) at the host's paths, so
//!   the command line the process runtime uses runs unchanged, plus an `/etc/passwd`
//!   that names the cluster's owner (PostgreSQL refuses to start for a user it cannot
//!   look up).
//!
//! An image carries the label `io.aiops.content`, a hash of the paths, sizes and
//! modification times of everything in it; [`ensure`] rebuilds only when that changes
//! (a new `target-app` build, a PostgreSQL upgrade).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::postgres::PgBins;

pub const TARGET_APP_IMAGE: &str = "aiops-target-app:local";
pub const POSTGRES_IMAGE: &str = "aiops-postgres:local";
/// Where `target-app` lives inside its image.
pub const TARGET_APP_PATH: &str = "/usr/local/bin/target-app";
/// Bumped when the way images are assembled changes, so old ones are rebuilt.
const FORMAT: &str = "2";
const CONTENT_LABEL: &str = "io.aiops.content";

/// What [`ensure`] did for one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageReport {
    pub image: String,
    /// `built` or `up to date`.
    pub outcome: String,
    pub files: usize,
    pub bytes: u64,
}

/// One file system: files to copy (source on this machine → path in the image), dirs to
/// create, and small files written from memory.
#[derive(Default)]
struct RootFs {
    files: Vec<(PathBuf, String)>,
    dirs: Vec<(String, u32)>,
    generated: Vec<(String, Vec<u8>, u32)>,
}

impl RootFs {
    fn copy(&mut self, src: &Path, dst: &str) {
        if !self.files.iter().any(|(_, d)| d == dst) {
            self.files.push((src.to_path_buf(), dst.to_string()));
        }
    }

    /// Copy `src` at its own path and every shared library it needs.
    fn copy_with_libs(&mut self, src: &Path) -> Result<()> {
        self.copy(src, &src.display().to_string());
        for lib in shared_libraries(src)? {
            self.copy(&lib, &lib.display().to_string());
        }
        Ok(())
    }

    fn copy_tree(&mut self, dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| io_error(&d, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error(&d, e))?;
                let path = entry.path();
                if skip(&path) {
                    continue;
                }
                let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    self.copy(&path, &path.display().to_string());
                }
            }
        }
        Ok(())
    }

    /// A hash of everything that goes in: changes when any input file does.
    fn content_hash(&self) -> String {
        use std::hash::{Hash, Hasher};
        // Not a security property: only "did an input change". Two hashers with
        // different keys make an accidental collision vanishingly unlikely.
        let mut a = std::collections::hash_map::DefaultHasher::new();
        let mut b = std::collections::hash_map::DefaultHasher::new();
        "salt".hash(&mut b);
        for h in [&mut a, &mut b] {
            FORMAT.hash(h);
            for (src, dst) in &self.files {
                dst.hash(h);
                if let Ok(m) = std::fs::metadata(src) {
                    (m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(h);
                }
            }
            for (p, mode) in &self.dirs {
                (p, mode).hash(h);
            }
            for (p, bytes, mode) in &self.generated {
                (p, bytes, mode).hash(h);
            }
        }
        format!("{:016x}{:016x}", a.finish(), b.finish())
    }

    /// The file system as a tar archive (what `docker import` takes).
    fn tar(&self) -> Result<(Vec<u8>, u64)> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(true);
        // The engine's importer does not take GNU sparse entries.
        builder.sparse(false);
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let parents = |path: &str, dirs: &mut BTreeSet<String>| {
            let mut p = Path::new(path).parent();
            let mut chain = Vec::new();
            while let Some(d) = p {
                let s = d.display().to_string();
                if s == "/" || s.is_empty() {
                    break;
                }
                chain.push(s);
                p = d.parent();
            }
            chain.into_iter().rev().for_each(|d| {
                dirs.insert(d);
            });
        };
        for (_, dst) in &self.files {
            parents(dst, &mut dirs);
        }
        for (dst, _, _) in &self.generated {
            parents(dst, &mut dirs);
        }
        let explicit: Vec<&str> = self.dirs.iter().map(|(d, _)| d.as_str()).collect();
        let append_dir = |b: &mut tar::Builder<Vec<u8>>, dir: &str, mode: u32| -> Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_size(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, dir.trim_start_matches('/'), std::io::empty())
                .map_err(|e| Error::Other(format!("building the image archive: {e}")))
        };
        for d in &dirs {
            if !explicit.contains(&d.as_str()) {
                append_dir(&mut builder, d, 0o755)?;
            }
        }
        for (d, mode) in &self.dirs {
            append_dir(&mut builder, d, *mode)?;
        }
        let mut bytes = 0u64;
        for (src, dst) in &self.files {
            let mut f = std::fs::File::open(src).map_err(|e| io_error(src, e))?;
            bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            builder
                .append_file(dst.trim_start_matches('/'), &mut f)
                .map_err(|e| Error::Other(format!("adding {} to the image: {e}", src.display())))?;
        }
        for (dst, content, mode) in &self.generated {
            let mut h = tar::Header::new_gnu();
            h.set_mode(*mode);
            h.set_size(content.len() as u64);
            h.set_mtime(0);
            h.set_cksum();
            builder
                .append_data(&mut h, dst.trim_start_matches('/'), &content[..])
                .map_err(|e| Error::Other(format!("building the image archive: {e}")))?;
            bytes += content.len() as u64;
        }
        let mut out = builder
            .into_inner()
            .map_err(|e| Error::Other(format!("building the image archive: {e}")))?;
        out.flush().ok();
        Ok((out, bytes))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Other(format!("{}: {e}", path.display()))
}

/// The shared libraries `path` loads, as `ldd` resolves them on this machine (the
/// dynamic loader included).
fn shared_libraries(path: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(path)
        .output()
        .map_err(|e| Error::Command {
            command: format!("ldd {}", path.display()),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": a static binary needs nothing.
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(Error::Other(format!(
                "{} needs a library this machine does not have: {line}",
                path.display()
            )));
        }
        let candidate = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(c) = candidate.filter(|c| c.starts_with('/')) {
            libs.push(PathBuf::from(c));
        }
    }
    Ok(libs)
}

fn etc_files(fs: &mut RootFs, pg_owner: Option<(u32, u32)>) {
    let mut passwd = String::from("root:x:0:0:root:/root:/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    if let Some((uid, gid)) = pg_owner.filter(|(uid, _)| *uid != 0) {
        passwd.push_str(&format!(
            "postgres:x:{uid}:{gid}:PostgreSQL:/var/lib/postgresql:/sbin/nologin\n"
        ));
        group.push_str(&format!("postgres:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    fs.generated
        .push(("/etc/passwd".into(), passwd.into_bytes(), 0o644));
    fs.generated
        .push(("/etc/group".into(), group.into_bytes(), 0o644));
    fs.dirs.push(("/tmp".into(), 0o1777));
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        fs.copy(certs, "/etc/ssl/certs/ca-certificates.crt");
    }
}

fn target_app_fs(target_app_bin: &Path) -> Result<RootFs> {
    let mut fs = RootFs::default();
    fs.copy(target_app_bin, TARGET_APP_PATH);
    for lib in shared_libraries(target_app_bin)? {
        fs.copy(&lib, &lib.display().to_string());
    }
    etc_files(&mut fs, None);
    Ok(fs)
}

/// The server binary at its real path: PostgreSQL finds its `share/` and `lib/` dirs
/// relative to where its executable really is, so a symlink on PATH
/// (`/usr/local/bin/postgres`) is not where it goes in the image.
pub fn postgres_server(bins: &PgBins) -> PathBuf {
    bins.postgres
        .canonicalize()
        .unwrap_or_else(|_| bins.postgres.clone())
}

fn postgres_fs(bins: &PgBins, owner: Option<(u32, u32)>) -> Result<RootFs> {
    let mut fs = RootFs::default();
    let server = postgres_server(bins);
    fs.copy_with_libs(&server)?;
    // /usr/lib/postgresql/15/bin/postgres → /usr/lib/postgresql/15: lib/ holds the
    // modules the server loads (plpgsql, the text-search dictionaries).
    let bin_dir = server.parent().unwrap_or(Path::new("/"));
    // For healthchecks (compose's runs it inside the container).
    let isready = bin_dir.join("pg_isready");
    if isready.is_file() {
        fs.copy_with_libs(&isready)?;
        // Debian's PATH entry for it.
        fs.copy(&isready, "/usr/bin/pg_isready");
    }
    if let Some(root) = bin_dir.parent() {
        let lib = root.join("lib");
        if lib.is_dir() {
            let mut modules = RootFs::default();
            modules.copy_tree(&lib, &|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // The JIT pulls in all of LLVM; the server runs without it.
                name.starts_with("llvmjit") || name == "bitcode" || name == "pgxs"
            })?;
            for (src, _) in &modules.files {
                if src.extension().is_some_and(|e| e == "so") {
                    fs.copy_with_libs(src)?;
                } else {
                    fs.copy(src, &src.display().to_string());
                }
            }
        }
        // /usr/lib/postgresql/15 → /usr/share/postgresql/15 (Debian's layout).
        if let (Some(version), Some(base)) = (root.file_name(), root.parent())
            && let Some(usr) = base.parent().and_then(|lib| lib.parent())
        {
            let share = usr.join("share/postgresql").join(version);
            if share.is_dir() {
                fs.copy_tree(&share, &|_| false)?;
            }
        }
    }
    let zoneinfo = Path::new("/usr/share/zoneinfo");
    if zoneinfo.is_dir() {
        fs.copy_tree(zoneinfo, &|p| {
            // The right/ and posix/ copies double the size for nothing.
            p.ends_with("right") || p.ends_with("posix")
        })?;
    }
    etc_files(&mut fs, owner);
    fs.dirs.push(("/var/run/postgresql".into(), 0o1777));
    Ok(fs)
}

/// Build (or keep) both local images. `pg_owner` is the uid/gid that owns the cluster.
pub async fn ensure(
    docker: &Docker,
    target_app_bin: &Path,
    pg: &PgBins,
    pg_owner: Option<(u32, u32)>,
    force: bool,
) -> Result<Vec<ImageReport>> {
    let mut reports = Vec::new();
    let target = target_app_fs(target_app_bin)?;
    reports.push(
        ensure_one(
            docker,
            TARGET_APP_IMAGE,
            &target,
            &[format!("ENTRYPOINT [\"{TARGET_APP_PATH}\"]")],
            force,
        )
        .await?,
    );
    let postgres = postgres_fs(pg, pg_owner)?;
    reports.push(
        ensure_one(
            docker,
            POSTGRES_IMAGE,
            &postgres,
            &[format!(
                "ENTRYPOINT [\"{}\"]",
                postgres_server(pg).display().to_string().replace('"', "")
            )],
            force,
        )
        .await?,
    );
    Ok(reports)
}

async fn ensure_one(
    docker: &Docker,
    image: &str,
    fs: &RootFs,
    changes: &[String],
    force: bool,
) -> Result<ImageReport> {
    let hash = fs.content_hash();
    if !force
        && let Ok(existing) = docker.inspect_image(image).await
        && existing
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(CONTENT_LABEL))
            == Some(&hash)
    {
        return Ok(ImageReport {
            image: image.to_string(),
            outcome: "up to date".into(),
            files: fs.files.len() + fs.generated.len(),
            bytes: 0,
        });
    }
    let (archive, bytes) = {
        // Reading a few hundred files is blocking work.
        let fs_files = fs.files.clone();
        let fs_dirs = fs.dirs.clone();
        let fs_generated = fs.generated.clone();
        tokio::task::spawn_blocking(move || {
            RootFs {
                files: fs_files,
                dirs: fs_dirs,
                generated: fs_generated,
            }
            .tar()
        })
        .await
        .map_err(|e| Error::Other(format!("building the image archive: {e}")))??
    };
    let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let mut all_changes: Vec<String> = changes.to_vec();
    all_changes.push(format!("LABEL {CONTENT_LABEL}={hash}"));
    all_changes.push("LABEL io.aiops.image=local".into());
    let mut options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .message("built by aiops from this machine's files")
        .build();
    options.changes = all_changes;
    let body = bollard::body_full(archive.into());
    let mut stream = docker.create_image(Some(options), Some(body), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| Error::Other(format!("docker import of {image} failed: {e}")))?;
    }
    Ok(ImageReport {
        image: image.to_string(),
        outcome: "built".into(),
        files: fs.files.len() + fs.generated.len(),
        bytes,
    })
}
