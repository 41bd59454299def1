//! The object types. Field names are camelCase in manifests, as Kubernetes users expect.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Metadata;

// ---------------------------------------------------------------------------------------------
// App

/// An app: a command run as a number of instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// What the user declared.
    pub spec: AppSpec,
    /// What the controllers observed.
    #[serde(default)]
    pub status: AppStatus,
}

/// The declared part of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// Instances to run. Default 1.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Placement preference: `spread` (default, for services) or `binPack` (for batch work).
    #[serde(default)]
    pub strategy: PlacementStrategy,
    /// Node labels an instance's node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node taints the instances tolerate, as Kubernetes' pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Higher-priority instances are placed first and may preempt lower ones when the cluster
    /// is full (Kubernetes' default is 0).
    #[serde(default)]
    pub priority: i32,
    /// Where instances may go relative to each other and to other apps' instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<PlacementConstraint>,
    /// How a changed template replaces running instances.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,
    /// Old templates kept for `berth rollout undo`. Default 10.
    #[serde(default = "default_history")]
    pub revision_history_limit: u32,
    /// What every instance runs.
    pub template: Template,
}

fn default_history() -> u32 {
    10
}

/// A placement constraint. `topology` is `node` (each node its own domain) or a node label
/// (`zone`: nodes with the same value form one domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PlacementConstraint {
    /// At most `max` instances of this app per domain.
    #[serde(rename_all = "camelCase")]
    MaxPer {
        /// The domains.
        topology: String,
        /// The limit.
        max: u32,
    },
    /// Instances spread over the domains with at most `maxSkew` between the fullest and the
    /// emptiest (Kubernetes' topology spread).
    #[serde(rename_all = "camelCase")]
    Spread {
        /// The domains.
        topology: String,
        /// Allowed difference. Default 1.
        #[serde(default = "one")]
        max_skew: u32,
        /// Refuse nodes that break it (default), or only prefer the others.
        #[serde(default = "yes")]
        required: bool,
    },
    /// In a domain running instances of `app` (same namespace).
    #[serde(rename_all = "camelCase")]
    Affinity {
        /// The other app.
        app: String,
        /// The domains.
        topology: String,
        /// Refuse nodes that break it (default), or only prefer the others.
        #[serde(default = "yes")]
        required: bool,
        /// Weight of a preferred constraint, 1 to 100. Default 50.
        #[serde(default = "fifty")]
        weight: u32,
    },
    /// In a domain running no instance of `app` (which may be this app itself).
    #[serde(rename_all = "camelCase")]
    AntiAffinity {
        /// The other app.
        app: String,
        /// The domains.
        topology: String,
        /// Refuse nodes that break it (default), or only prefer the others.
        #[serde(default = "yes")]
        required: bool,
        /// Weight of a preferred constraint, 1 to 100. Default 50.
        #[serde(default = "fifty")]
        weight: u32,
    },
}

fn yes() -> bool {
    true
}
fn fifty() -> u32 {
    50
}

/// A rolling update: new instances replace old ones a few at a time, gated by readiness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    /// Instances allowed above `replicas` during an update. Default 1.
    #[serde(default = "one")]
    pub max_surge: u32,
    /// Instances allowed below `replicas` (counting only ready ones) during an update. Default 0:
    /// capacity never drops.
    #[serde(default)]
    pub max_unavailable: u32,
    /// Seconds without progress after which the rollout is reported failed. Default 600.
    #[serde(default = "default_deadline")]
    pub progress_deadline_seconds: u32,
}

fn default_deadline() -> u32 {
    600
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        UpdateStrategy {
            max_surge: 1,
            max_unavailable: 0,
            progress_deadline_seconds: default_deadline(),
        }
    }
}

fn one() -> u32 {
    1
}

/// Where instances of an app go among the nodes that fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlacementStrategy {
    /// Least allocated nodes first, replicas apart.
    #[default]
    Spread,
    /// Most allocated nodes first.
    BinPack,
}

/// What an instance runs: copied into each instance when it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Template {
    /// The program; looked up on the agent's PATH, which starts with the directory of the berth
    /// binary so that `berth` itself can be the command.
    pub command: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent's own when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// CPU and memory reserved per instance.
    #[serde(default)]
    pub resources: ResourceSpec,
    /// Ports the instance listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<AppPort>,
    /// When an instance may receive traffic. Without one, an instance is ready when all its
    /// TCP ports accept connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// When an instance is broken beyond repair and must be restarted. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
}

/// Reserved resources, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    /// CPU: `100m`, `0.5`, `2`. Default `100m`.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory: `64Mi`, `1Gi`. Default `64Mi`.
    #[serde(default = "default_memory")]
    pub memory: String,
}

fn default_cpu() -> String {
    "100m".to_owned()
}
fn default_memory() -> String {
    "64Mi".to_owned()
}

impl Default for ResourceSpec {
    fn default() -> Self {
        ResourceSpec {
            cpu: default_cpu(),
            memory: default_memory(),
        }
    }
}

/// A port an instance listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppPort {
    /// Name, referenced by services and probes (an IANA service name: at most 15 characters).
    pub name: String,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port inside the instance's own network namespace. In host-port mode (unprivileged
    /// `berth dev`) the agent assigns a free port instead and passes it as `PORT0`, `PORT1`, ...
    /// and `PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Transport protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A health check: readiness (gates endpoints) or liveness (restarts the instance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// An HTTP GET that must answer 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP connect that must succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// A command run beside the instance (its environment and working directory) that must
    /// exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// Seconds after the start before the first check. Default 0.
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds between checks. Default 5. Until its first success, a readiness check runs every
    /// 100 ms so that a new instance serves as soon as it can.
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    /// Seconds a check may take. Default 1.
    #[serde(default = "one")]
    pub timeout_seconds: u32,
    /// Consecutive failures that count: readiness takes the instance out of endpoints,
    /// liveness restarts it. Default 3.
    #[serde(default = "default_failures")]
    pub failure_threshold: u32,
}

/// Exec probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    /// The program and its arguments.
    pub command: Vec<String>,
}

fn default_period() -> u32 {
    5
}
fn default_failures() -> u32 {
    3
}

/// HTTP GET probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// Path, default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Name of the app port to probe.
    pub port: String,
}

fn default_path() -> String {
    "/".to_owned()
}

/// TCP connect probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// Name of the app port to probe.
    pub port: String,
}

/// What the controllers observed of an app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppStatus {
    /// Instances that exist and are not being stopped.
    #[serde(default)]
    pub replicas: u32,
    /// Of those, the ready ones.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Of those, the ones running the current revision.
    #[serde(default)]
    pub updated_replicas: u32,
    /// Of the updated ones, the ready ones.
    #[serde(default)]
    pub updated_ready_replicas: u32,
    /// The current template's revision (1 for the first).
    #[serde(default)]
    pub revision: u32,
    /// Progress of the rollout to `revision`.
    #[serde(default)]
    pub rollout: RolloutStatus,
    /// Templates kept for undo, oldest first; the last one is the current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AppRevision>,
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RolloutPhase {
    /// Instances of the current revision are being started or old ones stopped.
    #[default]
    Progressing,
    /// Every instance runs the current revision and is ready.
    Complete,
    /// No progress within the progress deadline.
    Failed,
}

/// The rollout of an app's current revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStatus {
    /// Where it stands.
    #[serde(default)]
    pub phase: RolloutPhase,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it last made progress (an instance of the new revision turned ready, or an old one
    /// was stopped), seconds since the Unix epoch.
    #[serde(default)]
    pub last_progress_at: u64,
}

/// One kept template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRevision {
    /// Its number.
    pub revision: u32,
    /// When it became current, seconds since the Unix epoch.
    pub created_at: u64,
    /// The template.
    pub template: Template,
}

// ---------------------------------------------------------------------------------------------
// Service

/// A stable name and ports in front of an app's ready instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// What the user declared.
    pub spec: ServiceSpec,
    /// What control assigned.
    #[serde(default)]
    pub status: ServiceStatus,
}

/// The declared part of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The app (in the same namespace) whose ready instances are the endpoints.
    pub app: String,
    /// Ports the service exposes.
    pub ports: Vec<ServicePort>,
    /// No virtual IP: DNS answers the instance addresses.
    #[serde(default)]
    pub headless: bool,
    /// A virtual IP the user asks for, inside the server's service range and not taken (as
    /// Kubernetes' `spec.clusterIP`); without one, control allocates the next free address.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
    /// How the proxy picks an instance for each request or connection.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// `clientIP`: requests from one client address keep going to the same instance while it
    /// is ready (a consistent hash of the source address, so scaling moves few clients).
    #[serde(default)]
    pub session_affinity: SessionAffinity,
}

/// Load-balancing policies a service may ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// The less busy of two random instances.
    LeastRequest,
    /// Uniformly random.
    Random,
    /// Consistent hash (ketama ring) of the client address.
    RingHash,
    /// Maglev consistent hash of the client address.
    Maglev,
}

/// Session affinity of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionAffinity {
    /// None.
    #[default]
    None,
    /// By client address.
    #[serde(rename = "clientIP")]
    ClientIp,
}

/// A service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Name, used in SRV names (`_<name>._tcp.<svc>...`) and by routes.
    pub name: String,
    /// Port on the service's virtual IP.
    pub port: u16,
    /// Name of the app port traffic goes to; the same name when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<String>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// What the port speaks, as Kubernetes' `appProtocol`: `http` makes the node proxy
    /// balance each request on the VIP (L7), `tcp` each connection (L4). Default: `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// The app port this service port sends to.
    pub fn target(&self) -> &str {
        self.target_port.as_deref().unwrap_or(&self.name)
    }
}

/// What control assigned to a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    /// The virtual IP, when one was allocated (not in unprivileged `berth dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<IpAddr>,
    /// Why no virtual IP was allocated (the requested one is taken, the range is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Route

/// Virtual hosts and paths from the outside in, to service ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// What the user declared.
    pub spec: RouteSpec,
}

/// The declared part of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Host names (`hello.localhost`) or wildcards (`*.example.com`).
    pub hosts: Vec<String>,
    /// Terminate TLS for these hosts with a certificate from a `tls` secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
    /// Path rules; the longest matching prefix wins.
    pub rules: Vec<RouteRule>,
    /// Sticky sessions: a client keeps the instance it was first sent to, through a signed
    /// cookie, until that instance goes away (then another is chosen and the cookie re-issued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<RouteSticky>,
}

/// Cookie affinity of a route (applies to the service ports its rules send to).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSticky {
    /// Cookie name.
    #[serde(default = "default_sticky_cookie")]
    pub cookie: String,
    /// Cookie path.
    #[serde(default = "default_path")]
    pub path: String,
    /// Cookie lifetime in seconds.
    #[serde(default = "default_sticky_ttl")]
    pub ttl_seconds: u64,
    /// A secret whose `key` signs the cookies, so that every node's ingress honours them. It
    /// must be readable by agents: type `tls`, or labelled `berth.io/data-plane: "true"`.
    /// Without one, each node signs with its own random key (cookies hold on one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn default_sticky_cookie() -> String {
    "berth-sticky".to_owned()
}

fn default_sticky_ttl() -> u64 {
    3600
}

/// TLS of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTls {
    /// A secret of type `tls` in the route's namespace.
    pub secret: String,
}

/// One path rule of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    /// Path prefix, default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Service in the route's namespace.
    pub service: String,
    /// Name of the service port.
    pub port: String,
    /// Time for the whole request, in milliseconds (0: none); default the proxy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries of failed requests (connect failures always; resets and 5xx of idempotent
    /// methods), within the proxy's retry budget; default the proxy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Node

/// A machine running `berth agent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Name and labels (namespace is empty: nodes are cluster-scoped).
    pub metadata: Metadata,
    /// What the agent registered.
    pub spec: NodeSpec,
    /// Liveness as the agent reports it.
    #[serde(default)]
    pub status: NodeStatus,
}

/// What a node offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's address for instances and other nodes.
    pub address: IpAddr,
    /// Millicores instances may use.
    pub cpu_millis: u64,
    /// Bytes of memory instances may use.
    pub memory_bytes: u64,
    /// Most instances at once.
    pub max_instances: u32,
    /// Cordoned: nothing new is placed here.
    #[serde(default)]
    pub unschedulable: bool,
    /// Port on `address` where the agent serves instance logs to the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_port: Option<u16>,
    /// The node's instance subnet (CIDR, e.g. `10.244.1.0/24`), as Kubernetes' `podCIDR`:
    /// allocated by control from the cluster CIDR when empty, or set by an admin. A PUT that
    /// leaves it empty (an agent registering again) keeps the one allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<String>,
    /// Marks that repel instances which do not tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// A mark on a node that repels instances not tolerating it, as in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// A label key (`dedicated`, `example.com/gpu`).
    pub key: String,
    /// May be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// What it does to instances that do not tolerate it.
    pub effect: TaintEffect,
}

impl std::fmt::Display for Taint {
    /// `key=value:Effect`, as kubectl writes taints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)?;
        if !self.value.is_empty() {
            write!(f, "={}", self.value)?;
        }
        write!(f, ":{}", self.effect.as_str())
    }
}

/// What a taint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// No new instance that does not tolerate it is placed on the node.
    NoSchedule,
    /// The scheduler avoids the node when another fits.
    PreferNoSchedule,
    /// As `NoSchedule`, and instances already there that do not tolerate it are stopped and
    /// replaced elsewhere.
    NoExecute,
}

impl TaintEffect {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// How a toleration compares a taint's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TolerationOperator {
    /// The value must be equal (default).
    #[default]
    Equal,
    /// Any value; with no key, every taint.
    Exists,
}

/// Lets an app's instances onto nodes with matching taints (Kubernetes' toleration, without
/// `tolerationSeconds`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// The taint key; empty (with `Exists`) matches every key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// The value for `Equal`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Only taints with this effect; all effects when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration covers `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// A node's condition: its agent's heartbeats, judged by the node controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// The agent is running and its heartbeats arrive.
    #[serde(default)]
    pub ready: bool,
    /// The last heartbeat, by the API server's clock, seconds since the Unix epoch.
    #[serde(default)]
    pub heartbeat_at: u64,
    /// When `ready` last changed, by the API server's clock.
    #[serde(default)]
    pub since: u64,
    /// Why it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the node has no usable pod subnet (control's node IPAM: the cluster CIDR is full,
    /// or its subnet overlaps another node's). Kept across the agent's status reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet_error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Instance

/// One running copy of an app, placed on a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// Name (`<app>-<suffix>`), namespace, labels (`app`).
    pub metadata: Metadata,
    /// What control decided.
    pub spec: InstanceSpec,
    /// What the agent reports.
    #[serde(default)]
    pub status: InstanceStatus,
}

/// What control decided for an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    /// The app it belongs to.
    pub app: String,
    /// The app revision whose template it runs.
    #[serde(default)]
    pub revision: u32,
    /// What it runs (a copy of the app's template when it was created).
    pub template: Template,
    /// The node it is placed on; none while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Control wants it stopped: it leaves endpoints at once, and the agent stops it.
    #[serde(default)]
    pub stop: bool,
}

/// The life cycle of an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InstanceState {
    /// Waiting for a node.
    #[default]
    Pending,
    /// Placed, not started yet.
    Scheduled,
    /// Process started, not ready yet.
    Starting,
    /// Ready: in endpoints.
    Ready,
    /// Running but its readiness check fails.
    Running,
    /// Being stopped.
    Terminating,
    /// Stopped on purpose.
    Stopped,
    /// The process exited or could not start; the agent restarts it.
    Failed,
}

impl InstanceState {
    /// Lowercase name for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Scheduled => "scheduled",
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Running => "running",
            InstanceState::Terminating => "terminating",
            InstanceState::Stopped => "stopped",
            InstanceState::Failed => "failed",
        }
    }
}

/// What the agent reports of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceStatus {
    /// Where it is in its life cycle.
    #[serde(default)]
    pub state: InstanceState,
    /// The address its ports listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Its ports, by app port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// How many times the agent restarted it.
    #[serde(default)]
    pub restarts: u32,
    /// Why the process last exited, or why it is not placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Process id on its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// The ready instances behind a service, computed by control (same namespace and name as the
/// service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    /// Same name and namespace as the service.
    pub metadata: Metadata,
    /// Ready addresses, sorted by instance name.
    #[serde(default)]
    pub addresses: Vec<EndpointAddress>,
}

/// One ready instance behind a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointAddress {
    /// Instance name (its DNS host name).
    pub instance: String,
    /// Node it runs on.
    pub node: String,
    /// Its address.
    pub address: IpAddr,
    /// Its port for each service port, by service port name.
    pub ports: BTreeMap<String, u16>,
}

// ---------------------------------------------------------------------------------------------
// Secret

/// A TLS certificate and key, or opaque data. Viewer tokens see its keys, not its values; its
/// values are never logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// What it holds.
    #[serde(rename = "type", default)]
    pub kind: SecretType,
    /// The values, by key. A `tls` secret has `tls.crt` and `tls.key`, PEM.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// What a secret holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretType {
    /// Anything.
    #[default]
    Opaque,
    /// A certificate chain (`tls.crt`) and its private key (`tls.key`), PEM.
    Tls,
}
