-- Runs health.lua on sample KumikoApp objects and asserts the health Argo CD would show.
-- Usage (from the workspace root): lua5.4 infra/gitops/argocd/health_test.lua
-- Also runs under lua5.1, the dialect of Argo CD's gopher-lua. Exits 1 when any case is wrong.

local script = arg and arg[1] or "infra/gitops/argocd/health.lua"

-- Loads health.lua as Argo CD does: a chunk with `obj` as a global, returning a table.
local function run_health(obj)
  local env = {
    obj = obj,
    ipairs = ipairs,
    pairs = pairs,
    tostring = tostring,
    tonumber = tonumber,
    type = type,
    string = string,
    table = table,
    math = math,
  }
  local chunk, load_error
  if setfenv ~= nil then
    chunk, load_error = loadfile(script)
    if chunk ~= nil then
      setfenv(chunk, env)
    end
  else
    chunk, load_error = loadfile(script, "t", env)
  end
  if chunk == nil then
    error("cannot load " .. script .. ": " .. tostring(load_error))
  end
  return chunk()
end

local function condition(kind, status, reason, message, generation)
  return {
    type = kind,
    status = status,
    reason = reason,
    message = message,
    lastTransitionTime = "2025-06-01T10:00:00Z",
    observedGeneration = generation,
  }
end

local function app(generation, status)
  return {
    apiVersion = "kumiko.so/v1alpha1",
    kind = "KumikoApp",
    metadata = { name = "status", namespace = "status", generation = generation },
    spec = { image = "ghcr.io/acme/status:1.4.2" },
    status = status,
  }
end

local function paused(generation, status)
  local obj = app(generation, status)
  obj.spec.paused = true
  return obj
end

local cases = {
  {
    name = "a new app without status is Progressing",
    obj = app(1, nil),
    status = "Progressing",
    message = "Waiting for the operator to see the KumikoApp",
  },
  {
    name = "a rolled-out app is Healthy",
    obj = app(3, {
      observedGeneration = 3,
      conditions = {
        condition("Ready", "True", "RolledOut", "API 2/2 and worker 1/1 ready on ghcr.io/acme/status:1.4.2", 3),
        condition("Reconciling", "False", "RolledOut", "", 3),
        condition("Stalled", "False", "RolledOut", "", 3),
        condition("DatabaseReady", "True", "ClusterReady", "", 3),
        condition("RolesReady", "True", "RolesCreated", "", 3),
        condition("Migrated", "True", "MigrationSucceeded", "", 3),
        condition("ApiAvailable", "True", "MinimumReplicasAvailable", "", 3),
        condition("WorkerAvailable", "True", "MinimumReplicasAvailable", "", 3),
      },
    }),
    status = "Healthy",
    message = "API 2/2 and worker 1/1 ready on ghcr.io/acme/status:1.4.2",
  },
  {
    name = "a stalled app is Degraded with the operator's message",
    obj = app(4, {
      observedGeneration = 4,
      conditions = {
        condition("Ready", "False", "MigrationFailed", "waiting for a new image", 4),
        condition("Reconciling", "False", "MigrationFailed", "", 4),
        condition("Stalled", "True", "MigrationFailed", "migrate Job status-migrate-1a2b3c failed: relation \"users\" already exists", 4),
        condition("Migrated", "False", "MigrationFailed", "", 4),
      },
    }),
    status = "Degraded",
    message = "migrate Job status-migrate-1a2b3c failed: relation \"users\" already exists",
  },
  {
    name = "a rollout in progress is Progressing with Ready's message",
    obj = app(5, {
      observedGeneration = 5,
      conditions = {
        condition("Ready", "False", "RollingOut", "API 1/2 ready on ghcr.io/acme/status:1.5.0", 5),
        condition("Reconciling", "True", "RollingOut", "rolling out ghcr.io/acme/status:1.5.0", 5),
        condition("Stalled", "False", "RollingOut", "", 5),
      },
    }),
    status = "Progressing",
    message = "API 1/2 ready on ghcr.io/acme/status:1.5.0",
  },
  {
    name = "a stale status (observedGeneration behind) is Progressing even when it says Ready",
    obj = app(7, {
      observedGeneration = 6,
      conditions = {
        condition("Ready", "True", "RolledOut", "ready", 6),
        condition("Stalled", "False", "RolledOut", "", 6),
      },
    }),
    status = "Progressing",
    message = "Waiting for the operator to see generation 7 (status is of generation 6)",
  },
  {
    name = "a stale status is Progressing even when it says Stalled",
    obj = app(9, {
      observedGeneration = 8,
      conditions = {
        condition("Ready", "False", "InvalidSpec", "", 8),
        condition("Stalled", "True", "InvalidSpec", "two KumikoApps in namespace status", 8),
      },
    }),
    status = "Progressing",
    message = "Waiting for the operator to see generation 9 (status is of generation 8)",
  },
  {
    name = "a status without observedGeneration is Progressing",
    obj = app(1, { conditions = { condition("Ready", "True", "RolledOut", "ready", 1) } }),
    status = "Progressing",
    message = "Waiting for the operator to see generation 1 (status is of generation none)",
  },
  {
    name = "Stalled wins over Ready",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "RolledOut", "ready", 2),
        condition("Stalled", "True", "InvalidSpec", "spec.database: exactly one mode", 2),
      },
    }),
    status = "Degraded",
    message = "spec.database: exactly one mode",
  },
  {
    name = "a Ready condition of an older generation does not make the app Healthy",
    obj = app(4, {
      observedGeneration = 4,
      conditions = {
        condition("Ready", "True", "RolledOut", "ready", 3),
        condition("Reconciling", "True", "Migrating", "running the migrate Job", 4),
        condition("Stalled", "False", "Migrating", "", 4),
      },
    }),
    status = "Progressing",
    message = "running the migrate Job",
  },
  {
    name = "a Stalled condition of an older generation does not make the app Degraded",
    obj = app(4, {
      observedGeneration = 4,
      conditions = {
        condition("Stalled", "True", "InvalidSpec", "old problem", 3),
        condition("Ready", "True", "RolledOut", "ready", 4),
      },
    }),
    status = "Healthy",
    message = "ready",
  },
  {
    name = "an observed app without conditions yet is Progressing",
    obj = app(1, { observedGeneration = 1 }),
    status = "Progressing",
    message = "Waiting for the Ready condition",
  },
  {
    name = "Ready=Unknown with only a reason is Progressing with the reason",
    obj = app(1, {
      observedGeneration = 1,
      conditions = { condition("Ready", "Unknown", "Observing", "", 1) },
    }),
    status = "Progressing",
    message = "Observing",
  },
}

local paused_message = "spec.paused is true: the operator changes nothing until it is resumed"
local more = {
  {
    name = "a paused app is Suspended, even when rolled out",
    obj = paused(3, {
      observedGeneration = 3,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 3),
        condition("Reconciling", "False", "Available", "", 3),
        condition("Stalled", "False", "Progressing", "", 3),
      },
    }),
    status = "Suspended",
    message = paused_message,
  },
  {
    name = "a paused app mid-rollout is Suspended, not Progressing",
    obj = paused(4, {
      observedGeneration = 4,
      conditions = {
        condition("Ready", "Unknown", "Running", "waiting for Migrated: Job status-migrate-1 is migrating", 4),
        condition("Reconciling", "False", "Paused", "spec.paused is true: the operator writes nothing but status", 4),
        condition("Stalled", "False", "Progressing", "", 4),
      },
    }),
    status = "Suspended",
    message = paused_message,
  },
  {
    name = "pausing is Progressing until the operator has seen the paused generation",
    obj = paused(5, {
      observedGeneration = 4,
      conditions = { condition("Ready", "True", "Available", "ready", 4) },
    }),
    status = "Progressing",
    message = "Waiting for the operator to see generation 5 (status is of generation 4)",
  },
  {
    name = "an HTTPRoute the Gateway has not accepted holds the app in Progressing with the route's message",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "Unknown", "RouteNotAccepted", "waiting for RouteAccepted: ...", 2),
        condition("Reconciling", "True", "RouteNotAccepted", "waiting for RouteAccepted: ...", 2),
        condition("Stalled", "False", "Progressing", "", 2),
        condition("ApiAvailable", "True", "Available", "2/2", 2),
        condition("RouteAccepted", "False", "RouteNotAccepted",
          "Gateway infra/public reports Accepted False on HTTPRoute status-api (NotAllowedByListeners): no listener allows routes from namespace status", 2),
      },
    }),
    status = "Progressing",
    message = "Gateway infra/public reports Accepted False on HTTPRoute status-api (NotAllowedByListeners): no listener allows routes from namespace status",
  },
  {
    name = "an accepted route with the rest rolled out is Healthy",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 2),
        condition("Stalled", "False", "Progressing", "", 2),
        condition("RouteAccepted", "True", "Accepted", "Gateway infra/public accepted HTTPRoute status-api", 2),
      },
    }),
    status = "Healthy",
    message = "the current generation is rolled out and available",
  },
  {
    name = "a ready app whose autoscaler cannot read its metrics is Degraded with the autoscaler's message",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 2),
        condition("Stalled", "False", "Progressing", "", 2),
        condition("AutoscalerActive", "False", "FailedGetResourceMetric",
          "HorizontalPodAutoscaler status-api: the HPA was unable to compute the replica count: did not receive metrics for any ready pods", 2),
      },
    }),
    status = "Degraded",
    message = "HorizontalPodAutoscaler status-api: the HPA was unable to compute the replica count: did not receive metrics for any ready pods",
  },
  {
    name = "a ready app with an active autoscaler is Healthy",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 2),
        condition("AutoscalerActive", "True", "ScalingActive",
          "HorizontalPodAutoscaler status-api computes replica counts from its metrics", 2),
      },
    }),
    status = "Healthy",
    message = "the current generation is rolled out and available",
  },
  {
    name = "an autoscaler disabled by a target at zero replicas keeps a ready app Healthy",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 2),
        condition("AutoscalerActive", "False", "ScalingDisabled",
          "HorizontalPodAutoscaler status-api: scaling is disabled since the replica count of the target is zero", 2),
      },
    }),
    status = "Healthy",
    message = "the current generation is rolled out and available",
  },
  {
    name = "an inactive autoscaler of an older generation does not make the app Degraded",
    obj = app(3, {
      observedGeneration = 3,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 3),
        condition("AutoscalerActive", "False", "FailedGetResourceMetric", "no metrics", 2),
      },
    }),
    status = "Healthy",
    message = "the current generation is rolled out and available",
  },
  {
    name = "a ready app without the PodMonitor CRD is Healthy and says what to install",
    obj = app(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "Available", "the current generation is rolled out and available", 2),
        condition("MonitoringAvailable", "False", "PodMonitorCrdMissing",
          "the cluster does not serve monitoring.coreos.com/v1 PodMonitor: install the prometheus-operator CRDs", 2),
      },
    }),
    status = "Healthy",
    message = "the current generation is rolled out and available; the cluster does not serve monitoring.coreos.com/v1 PodMonitor: install the prometheus-operator CRDs",
  },
  {
    name = "a paused app with an inactive autoscaler is Suspended",
    obj = paused(2, {
      observedGeneration = 2,
      conditions = {
        condition("Ready", "True", "Available", "ready", 2),
        condition("AutoscalerActive", "False", "FailedGetResourceMetric", "no metrics", 2),
      },
    }),
    status = "Suspended",
    message = "spec.paused is true: the operator changes nothing until it is resumed",
  },
}
for _, case in ipairs(more) do
  table.insert(cases, case)
end

local failures = 0
for _, case in ipairs(cases) do
  local ok, result = pcall(run_health, case.obj)
  if not ok then
    failures = failures + 1
    print("FAIL " .. case.name .. ": " .. tostring(result))
  elseif type(result) ~= "table" or result.status ~= case.status or result.message ~= case.message then
    failures = failures + 1
    local got = type(result) == "table" and (tostring(result.status) .. " / " .. tostring(result.message))
      or tostring(result)
    print("FAIL " .. case.name .. ": want " .. case.status .. " / " .. case.message .. ", got " .. got)
  else
    print("ok   " .. case.name)
  end
end

print(string.format("%d cases, %d failed (%s)", #cases, failures, _VERSION))
if failures > 0 then
  os.exit(1)
end
