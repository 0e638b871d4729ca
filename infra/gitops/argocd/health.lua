-- Argo CD health check for kumiko.so/KumikoApp (resource.customizations.health.kumiko.so_KumikoApp).
--
-- Reads the status the operator writes, in this order:
--   1. observedGeneration: until the operator has seen the current spec, nothing else in the status
--      is about this spec, so the app is Progressing;
--   2. spec.paused: the operator writes nothing but status until the app is resumed: Suspended
--      (as Argo CD shows a paused Deployment), whatever the conditions say;
--   3. Stalled=True: a permanent error (bad spec, failed migration) that waits for a spec change:
--      Degraded, with the operator's message;
--   4. Ready=True: the current generation is fully rolled out: Healthy, unless
--      AutoscalerActive=False for a reason other than ScalingDisabled (an autoscaler that cannot
--      read its metrics: the app serves, but will not scale under load): Degraded, with the
--      autoscaler's message, as Argo CD's own health of a HorizontalPodAutoscaler is Degraded on
--      ScalingActive=False FailedGetResourceMetric (gitops-engine pkg/health/health_hpa.go);
--      MonitoringAvailable=False (no PodMonitor: prometheus-operator is not installed) keeps it
--      Healthy, with that message after Ready's;
--   5. RouteAccepted=False: the Gateway has not accepted the app's HTTPRoute (or refused it):
--      Progressing, with the route's message (the Gateway's reason);
--   otherwise Progressing, with the message of Ready (or Reconciling) saying which step waits.
-- A condition written for an older generation (its own observedGeneration) is ignored as stale.
--
-- Argo CD runs this with gopher-lua (Lua 5.1): only 5.1 syntax and the base library are used.
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the KumikoApp"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for the operator to see generation " .. tostring(generation) ..
      " (status is of generation " .. tostring(observed or "none") .. ")"
  else
    hs.message = "Waiting for the operator to see the current spec"
  end
  return hs
end

local function current(c)
  if c == nil then
    return nil
  end
  if c.observedGeneration ~= nil and generation ~= nil and c.observedGeneration < generation then
    return nil
  end
  return c
end

if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "spec.paused is true: the operator changes nothing until it is resumed"
  return hs
end

local stalled = current(condition(obj.status, "Stalled"))
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = current(condition(obj.status, "Ready"))
if ready ~= nil and ready.status == "True" then
  local autoscaler = current(condition(obj.status, "AutoscalerActive"))
  if autoscaler ~= nil and autoscaler.status == "False" and autoscaler.reason ~= "ScalingDisabled" then
    hs.status = "Degraded"
    hs.message = describe(autoscaler, "The autoscaler is not active")
    return hs
  end
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  local monitoring = current(condition(obj.status, "MonitoringAvailable"))
  if monitoring ~= nil and monitoring.status == "False" then
    hs.message = hs.message .. "; " .. describe(monitoring, "no PodMonitor")
  end
  return hs
end

local reconciling = current(condition(obj.status, "Reconciling"))
local route = current(condition(obj.status, "RouteAccepted"))
hs.status = "Progressing"
if route ~= nil and route.status == "False" then
  hs.message = describe(route, "Waiting for the Gateway to accept the route")
elseif ready ~= nil then
  hs.message = describe(ready, "Not ready yet")
else
  hs.message = describe(reconciling, "Waiting for the Ready condition")
end
return hs
