//! The containers: started per image at start, identified, replaced when
//! they die, removed at shutdown (and, as a best effort, on drop).

use super::*;

impl Inner {
    /// Starts a container per configured image and identifies its compilers.
    pub(super) async fn start_images(&mut self) {
        if let Err(e) = create_work_root(&self.work_root) {
            let reason = format!("cannot create {}: {e}", self.work_root.display());
            self.docker = Err(reason);
            return;
        }
        // FIFOs of containers a previous run of this worker left behind.
        if let Ok(entries) = std::fs::read_dir(&self.work_root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".hg-req-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        match self.start_done_reader() {
            Ok(h) => self.done_reader = Some(h),
            Err(e) => {
                self.docker = Err(format!("{}: {e}", self.done_fifo.display()));
                return;
            }
        }
        {
            use std::os::unix::fs::MetadataExt;
            match std::fs::metadata(&self.work_root) {
                Ok(m) => self.user = format!("{}:{}", m.uid(), m.gid()),
                Err(e) => {
                    self.docker = Err(format!("{}: {e}", self.work_root.display()));
                    return;
                }
            }
        }
        let images: Vec<(String, String)> = self
            .opts
            .images
            .iter()
            .map(|(a, i)| (a.clone(), i.clone()))
            .collect();
        for (arch_name, image) in images {
            let arch = Arch::parse(&arch_name);
            match self.start_image(&arch, &image).await {
                Ok(found) if !found.is_empty() => {
                    self.images.push(DockerImage {
                        arch: arch.clone(),
                        image: image.clone(),
                    });
                    self.compilers.extend(found.into_iter().map(|info| Placed {
                        info,
                        image: image.clone(),
                    }));
                }
                Ok(_) => {
                    let why = format!("image {image} has no compiler for {arch}");
                    tracing::warn!(image = %image, arch = %arch, "Docker image unusable: {why}");
                    self.remove_container_of(&image).await;
                    self.unusable.insert(arch, why);
                }
                Err(why) => {
                    tracing::warn!(image = %image, arch = %arch, "Docker image unusable: {why}");
                    self.remove_container_of(&image).await;
                    self.unusable.insert(arch, why);
                }
            }
        }
    }

    /// Makes the FIFO runners report on and the task reading it.
    pub(super) fn start_done_reader(&self) -> std::io::Result<tokio::task::AbortHandle> {
        let _ = std::fs::remove_file(&self.done_fifo);
        nix::unistd::mkfifo(&self.done_fifo, nix::sys::stat::Mode::S_IRWXU)?;
        // Read-write: never EOF while runners come and go, and a runner's
        // open never blocks.
        let rx = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&self.done_fifo)?;
        let pending = self.pending.clone();
        let task = tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(rx);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let Some((dir, code)) = text.trim_end().rsplit_once(' ') else {
                    continue;
                };
                let code = code.parse::<i64>().unwrap_or(-1);
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(dir));
                if let Some(tx) = waiter {
                    let _ = tx.send(code);
                }
            }
        });
        Ok(task.abort_handle())
    }

    pub(super) async fn start_image(
        &self,
        arch: &Arch,
        image: &str,
    ) -> Result<Vec<CompilerInfo>, String> {
        let docker = self.docker.as_ref().map_err(Clone::clone)?;
        docker.inspect_image(image).await.map_err(|e| {
            format!("image {image} is not present ({e}); build or `docker pull {image}` it")
        })?;
        let slot = self
            .create_container(arch, image)
            .await
            .map_err(|e| e.to_string())?;
        self.containers.lock().await.insert(image.to_owned(), slot);
        self.identify_compilers(arch, image)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn create_container(
        &self,
        arch: &Arch,
        image: &str,
    ) -> Result<Slot, GridError> {
        let docker = self.docker()?;
        let name = container_name(&self.opts.worker_id, arch.as_str());
        // The runner's request FIFO must exist before it starts (`<>` would
        // create a plain file).
        let requests = self.work_root.join(format!(".hg-req-{name}"));
        let _ = std::fs::remove_file(&requests);
        nix::unistd::mkfifo(&requests, nix::sys::stat::Mode::S_IRWXU).map_err(|e| {
            GridError::Internal(format!("cannot create {}: {e}", requests.display()))
        })?;
        let root = self.work_root.display().to_string();
        let mut labels = HashMap::new();
        labels.insert(WORKER_LABEL.to_owned(), self.opts.worker_id.clone());
        labels.insert("hybridgrid.image".to_owned(), image.to_owned());
        let mut tmpfs = HashMap::new();
        tmpfs.insert("/tmp".to_owned(), "rw,nosuid,nodev,size=256m".to_owned());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["sh".into(), "-c".into()]),
            cmd: Some(vec![
                RUNNER.into(),
                "hg-runner".into(),
                requests.display().to_string(),
                self.done_fifo.display().to_string(),
            ]),
            user: Some(self.user.clone()),
            network_disabled: Some(true),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                // docker-init as PID 1 reaps the runner's finished compiles.
                init: Some(true),
                binds: Some(vec![format!("{root}:{root}:rw")]),
                memory: Some(self.opts.memory_bytes),
                nano_cpus: (self.opts.cpus > 0.0).then_some((self.opts.cpus * 1e9) as i64),
                pids_limit: Some(self.opts.pids_limit),
                readonly_rootfs: Some(true),
                tmpfs: Some(tmpfs),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| docker_err(&format!("creating a container of {image}"), e))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            let _ = std::fs::remove_file(&requests);
            return Err(docker_err(&format!("starting a container of {image}"), e));
        }
        tracing::info!(container = %name, image = %image, "Docker container started");
        Ok(Slot {
            id: created.id,
            requests,
        })
    }

    pub(super) async fn remove_container_of(&self, image: &str) {
        let slot = self.containers.lock().await.remove(image);
        if let Some(slot) = slot {
            self.remove_slot(slot).await;
        }
    }

    pub(super) async fn remove_slot(&self, slot: Slot) {
        if let Ok(docker) = self.docker.as_ref() {
            let _ = docker
                .remove_container(
                    &slot.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
        }
        let _ = std::fs::remove_file(&slot.requests);
    }

    /// Replaces the container of `image` (after it died or a kill failed),
    /// unless it was replaced already since `stale` was seen.
    pub(super) async fn restart(
        &self,
        image: &str,
        stale: Option<&str>,
    ) -> Result<Slot, GridError> {
        let mut containers = self.containers.lock().await;
        if let Some(current) = containers.get(image)
            && stale.is_some_and(|s| s != current.id)
        {
            return Ok(current.clone());
        }
        let arch = self
            .images
            .iter()
            .find(|i| i.image == image)
            .map(|i| i.arch.clone())
            .unwrap_or_else(|| Arch::Other("unknown".into()));
        tracing::warn!(image = %image, "restarting the Docker container");
        if let Some(old) = containers.remove(image) {
            self.remove_slot(old).await;
        }
        let slot = self.create_container(&arch, image).await?;
        containers.insert(image.to_owned(), slot.clone());
        Ok(slot)
    }

    pub(super) async fn container_of(&self, image: &str) -> Result<Slot, GridError> {
        if let Some(slot) = self.containers.lock().await.get(image) {
            return Ok(slot.clone());
        }
        self.restart(image, None).await
    }

    /// Lists compiler-like names in the image and identifies those that
    /// target `arch`.
    pub(super) async fn identify_compilers(
        &self,
        arch: &Arch,
        image: &str,
    ) -> Result<Vec<CompilerInfo>, GridError> {
        let container = self.container_of(image).await?.id;
        let list = self
            .exec(
                &container,
                vec![
                    "sh".into(),
                    "-c".into(),
                    r#"printf '%s\n' "$CC" "$CXX"; IFS=:; for d in $PATH; do ls "$d" 2>/dev/null; done"#
                        .into(),
                ],
                None,
                vec![],
                1024 * 1024,
            )
            .await
            .map_err(|e| docker_err(&format!("listing compilers in {image}"), e))?;
        let text = String::from_utf8_lossy(&list.stdout).into_owned();
        let mut lines = text.lines();
        let mut candidates: Vec<String> = Vec::new();
        for cc in [lines.next(), lines.next()].into_iter().flatten() {
            if !cc.trim().is_empty() {
                candidates.push(cc.trim().to_owned());
            }
        }
        let mut names: Vec<String> = lines
            .map(str::trim)
            .filter(|n| detect::is_compiler_name(n))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        candidates.extend(names);
        let mut found: Vec<CompilerInfo> = Vec::new();
        for cand in candidates {
            let name = cand.rsplit('/').next().unwrap_or(&cand).to_owned();
            let c = container.clone();
            let info = detect::identify_with(&name, &cand, |args| {
                let c = c.clone();
                let cand = cand.clone();
                async move {
                    let mut cmd = vec![cand];
                    cmd.extend(args);
                    let fut = self.exec(&c, cmd, None, vec!["LC_ALL=C".into()], 1024 * 1024);
                    match tokio::time::timeout(Duration::from_secs(20), fut).await {
                        Ok(Ok(r)) if r.exit_code == 0 => {
                            Some(String::from_utf8_lossy(&r.stdout).trim().to_owned())
                        }
                        _ => None,
                    }
                }
            })
            .await;
            match info {
                Ok(info) if &info.identity.target_arch() == arch => {
                    if !found.iter().any(|f| f.identity == info.identity) {
                        found.push(info);
                    }
                }
                Ok(info) => tracing::debug!(image, compiler = %info.identity, "not for {arch}"),
                Err(e) => tracing::debug!(image, error = %e, "not a usable compiler"),
            }
        }
        Ok(found)
    }

    pub(super) async fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let slots: Vec<Slot> = self
            .containers
            .lock()
            .await
            .drain()
            .map(|(_, v)| v)
            .collect();
        if let Some(h) = &self.done_reader {
            h.abort();
        }
        if let Ok(docker) = self.docker.as_ref() {
            for slot in slots {
                if let Err(e) = docker
                    .remove_container(
                        &slot.id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await
                {
                    tracing::warn!(container = %slot.id, error = %e, "cannot remove Docker container");
                }
                let _ = std::fs::remove_file(&slot.requests);
            }
            let _ = std::fs::remove_file(&self.done_fifo);
            if self.opts.work_root.is_none() {
                let _ = std::fs::remove_dir_all(&self.work_root);
            }
            tracing::info!("Docker executor shut down");
        }
    }
}

/// Creates the work root (owner-only when new: the runners' FIFOs live there).
pub(super) fn create_work_root(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if root.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
}

/// Force-removes every container labelled `hybridgrid.worker=<worker>`.
pub(super) async fn remove_labelled(docker: &Docker, worker: &str) -> Result<usize, String> {
    let ids = labelled(docker, worker).await?;
    for id in &ids {
        let _ = docker
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
    if !ids.is_empty() {
        tracing::info!(
            count = ids.len(),
            "removed Docker containers left by a previous run"
        );
    }
    Ok(ids.len())
}

/// The ids of all containers (running or not) of `worker`.
pub(super) async fn labelled(docker: &Docker, worker: &str) -> Result<Vec<String>, String> {
    let mut filters = HashMap::new();
    filters.insert("label", vec![format!("{WORKER_LABEL}={worker}")]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// The number of containers (running or not) labelled for `worker`, for
/// checks and tests; `None` without a usable daemon.
pub async fn count_containers(docker_host: Option<&str>, worker: &str) -> Option<usize> {
    let mut opts = DockerOptions::new(worker, BTreeMap::new());
    opts.docker_host = docker_host.map(str::to_owned);
    let docker = connect(&opts).ok()?;
    labelled(&docker, worker).await.ok().map(|v| v.len())
}
