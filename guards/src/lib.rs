//! warden-guards: the sans-IO guard engine (rule-pack compiler, normaliser, input scanner,
//! streaming output scanner). Filled by the guards issue; intentionally empty until then.
