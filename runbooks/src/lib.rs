//! warden-runbooks: detectors, switchboard, throttles and the runbook engine. Filled by the
//! incident-response issue; intentionally empty until then.
