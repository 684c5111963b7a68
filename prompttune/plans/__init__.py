"""Plans that use the run lifecycle several times in one run dir: PET's ensemble, distillation and iPET."""
