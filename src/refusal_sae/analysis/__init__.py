"""Stage 5: what the refusal features explain — jailbreaks, upstream harm features → downstream refusal features,
probes that generalise out of distribution, and hardening refusal by feature steering. One module per analysis,
each a function ``(handle, saes, prompts, config) -> Result`` with a typed result in the run directory."""
