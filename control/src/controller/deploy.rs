//! Apps: revisions of their template, rolling updates gated by readiness, replicas, and the
//! forgetting of stopped instances.
//!
//! A changed template becomes a new revision. New instances are started and old ones stopped a
//! few at a time: at most `replicas + maxSurge` live at once, and never fewer than
//! `replicas - maxUnavailable` ready, as a Kubernetes Deployment does. An old instance is
//! stopped by marking it, which takes it out of endpoints at once; its agent drains it before
//! the signal.

use crate::api::{
    App, AppRevision, AppStatus, Instance, InstanceSpec, InstanceState, InstanceStatus, Kind,
    Metadata, Object, RolloutPhase, RolloutStatus, key,
};

use super::World;

/// Which live instance goes first when an app has too many: unplaced, then not ready, then the
/// most restarted, then the newest.
fn stop_order(i: &Instance) -> (bool, bool, std::cmp::Reverse<u32>, std::cmp::Reverse<u64>) {
    (
        i.spec.node.is_some(),
        i.status.state == InstanceState::Ready,
        std::cmp::Reverse(i.status.restarts),
        std::cmp::Reverse(i.metadata.created_revision),
    )
}

fn ready(i: &Instance) -> bool {
    i.status.state == InstanceState::Ready
}

/// Records a new revision when the template changed, trimming the kept history.
fn track_revision(app: &App, status: &mut AppStatus, now: u64) {
    let template = &app.spec.template;
    if status.history.last().map(|r| &r.template) == Some(template) {
        return;
    }
    // An undo brings an old template back: it becomes the newest revision, and its old entry
    // goes, as Kubernetes does with ReplicaSets.
    let revision = status
        .history
        .iter()
        .map(|r| r.revision)
        .max()
        .unwrap_or(0)
        .max(status.revision)
        + 1;
    status.history.retain(|r| &r.template != template);
    status.history.push(AppRevision {
        revision,
        created_at: now,
        template: template.clone(),
    });
    let keep = app.spec.revision_history_limit as usize + 1;
    if status.history.len() > keep {
        let drop = status.history.len() - keep;
        status.history.drain(..drop);
    }
    status.revision = revision;
    status.rollout = RolloutStatus {
        phase: RolloutPhase::Progressing,
        message: format!("rolling out revision {revision}"),
        last_progress_at: now,
    };
}

/// Brings every app to its replicas of its current revision.
pub fn reconcile_apps(world: &mut World, new_name: &mut dyn FnMut(&str) -> String) {
    // Shared, not copied: the world changes under these while the loop runs.
    let app_objects: Vec<std::sync::Arc<Object>> = world.of_shared(Kind::App).cloned().collect();
    let apps: Vec<&App> = app_objects
        .iter()
        .filter_map(|o| match &**o {
            Object::App(a) => Some(a),
            _ => None,
        })
        .collect();
    let instance_objects: Vec<std::sync::Arc<Object>> =
        world.of_shared(Kind::Instance).cloned().collect();
    let instances: Vec<&Instance> = instance_objects
        .iter()
        .filter_map(|o| match &**o {
            Object::Instance(i) => Some(i),
            _ => None,
        })
        .collect();

    // Each app's instances, found once: a pass stays linear in the number of instances.
    let mut by_app: std::collections::HashMap<(&str, &str), Vec<&Instance>> =
        std::collections::HashMap::new();
    for i in instances.iter().copied() {
        by_app
            .entry((i.metadata.namespace.as_str(), i.spec.app.as_str()))
            .or_default()
            .push(i);
    }
    for app in apps.iter().copied() {
        let mine = by_app
            .get(&(app.metadata.namespace.as_str(), app.metadata.name.as_str()))
            .map_or(&[][..], Vec::as_slice);
        reconcile_app(world, app, mine, new_name);
    }

    for i in &instances {
        let app_key = key(Kind::App, &i.metadata.namespace, &i.spec.app);
        if !i.spec.stop && world.get(&app_key).is_none() {
            stop(world, i);
        }
        // Forget an instance once it is stopped, or if it never ran anywhere.
        if i.spec.stop && (i.spec.node.is_none() || i.status.state == InstanceState::Stopped) {
            world.delete(&instance_key(i));
        }
    }
}

fn instance_key(i: &Instance) -> String {
    key(Kind::Instance, &i.metadata.namespace, &i.metadata.name)
}

fn reconcile_app(
    world: &mut World,
    app: &App,
    instances: &[&Instance],
    new_name: &mut dyn FnMut(&str) -> String,
) {
    let now = world.now;
    let ns = &app.metadata.namespace;
    let mut status = app.status.clone();
    track_revision(app, &mut status, now);
    let revision = status.revision;
    let template = &app.spec.template;
    // Instances from before revisions were tracked count as current when their template is.
    let is_current = |i: &Instance| {
        i.spec.revision == revision || (i.spec.revision == 0 && &i.spec.template == template)
    };

    let live: Vec<&Instance> = instances
        .iter()
        .copied()
        .filter(|i| &i.metadata.namespace == ns && i.spec.app == app.metadata.name && !i.spec.stop)
        .collect();
    let (mut new, mut old): (Vec<&Instance>, Vec<&Instance>) =
        live.iter().partition(|i| is_current(i));
    let replicas = app.spec.replicas as usize;
    let strategy = &app.spec.update_strategy;
    let max_unavailable = (strategy.max_unavailable as usize).min(replicas);
    // Both zero could never make progress; Kubernetes refuses that, we surge by one.
    let max_surge = match (strategy.max_surge as usize, max_unavailable) {
        (0, 0) => 1,
        (s, _) => s,
    };
    let min_available = replicas - max_unavailable;
    let mut available = live.iter().filter(|i| ready(i)).count();
    let prev_old = status.replicas.saturating_sub(status.updated_replicas) as usize;
    let prev_updated_ready = status.updated_ready_replicas as usize;

    // Too many of the current revision (scale down): the least useful go first.
    if new.len() > replicas {
        new.sort_by_key(|i| stop_order(i));
        let excess = new.len() - replicas;
        for i in new.drain(..excess) {
            if ready(i) {
                available -= 1;
            }
            stop(world, i);
        }
    }
    // Old instances: the unready ones go at once (they serve nobody); ready ones only while
    // enough others stay ready.
    old.sort_by_key(|i| stop_order(i));
    let mut kept_old = Vec::new();
    for i in old {
        if !ready(i) {
            stop(world, i);
        } else if available > min_available {
            available -= 1;
            stop(world, i);
        } else {
            kept_old.push(i);
        }
    }
    // Start instances of the current revision, within the surge.
    let live_now = new.len() + kept_old.len();
    let to_create = replicas
        .saturating_sub(new.len())
        .min((replicas + max_surge).saturating_sub(live_now));
    for _ in 0..to_create {
        let name = loop {
            let n = new_name(&app.metadata.name);
            if world.get(&key(Kind::Instance, ns, &n)).is_none() {
                break n;
            }
        };
        let mut metadata = Metadata::new(ns, &name);
        metadata
            .labels
            .insert("app".into(), app.metadata.name.clone());
        world.put(Object::Instance(Instance {
            metadata,
            spec: InstanceSpec {
                app: app.metadata.name.clone(),
                revision,
                template: template.clone(),
                node: None,
                stop: false,
            },
            status: InstanceStatus::default(),
        }));
    }

    // Observed at the start of this pass; the next pass reports the effect of its changes.
    let updated_ready = new.iter().filter(|i| ready(i)).count();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    status.replicas = count(live.len());
    status.ready_replicas = count(live.iter().filter(|i| ready(i)).count());
    status.updated_replicas = count(new.len());
    status.updated_ready_replicas = count(updated_ready);
    let old_left = live.len() - new.len();
    if old_left == 0 && new.len() == replicas && updated_ready == replicas {
        if status.rollout.phase != RolloutPhase::Complete {
            status.rollout = RolloutStatus {
                phase: RolloutPhase::Complete,
                message: format!("revision {revision}: {replicas} of {replicas} instances ready"),
                last_progress_at: now,
            };
        }
    } else {
        let progressed = updated_ready > prev_updated_ready || old_left < prev_old;
        let deadline = u64::from(strategy.progress_deadline_seconds);
        let message = format!(
            "revision {revision}: {updated_ready} of {replicas} updated instances ready, {old_left} old left"
        );
        if progressed || status.rollout.phase == RolloutPhase::Complete {
            status.rollout = RolloutStatus {
                phase: RolloutPhase::Progressing,
                message,
                last_progress_at: now,
            };
        } else if now.saturating_sub(status.rollout.last_progress_at) > deadline {
            if status.rollout.phase != RolloutPhase::Failed {
                status.rollout = RolloutStatus {
                    phase: RolloutPhase::Failed,
                    message: format!("no progress for {deadline} s: {message}"),
                    last_progress_at: status.rollout.last_progress_at,
                };
            }
        } else if status.rollout.phase == RolloutPhase::Progressing {
            status.rollout.message = message;
        }
    }
    // Checked before `update`, which copies the app: most passes change no app's status.
    if app.status != status {
        world.update(&key(Kind::App, ns, &app.metadata.name), |o| match o {
            Object::App(a) => {
                a.status = status;
                true
            }
            _ => false,
        });
    }
}

fn stop(world: &mut World, i: &Instance) {
    world.update(&instance_key(i), |o| match o {
        Object::Instance(i) if !i.spec.stop => {
            i.spec.stop = true;
            true
        }
        _ => false,
    });
}
