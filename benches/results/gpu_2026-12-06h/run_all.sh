#!/usr/bin/env bash
set -u
export OUT
bash benches/results/gpu_2026-12-06h/run_checks.sh 'add_rms_norm|swiglu'
bash benches/results/gpu_2026-12-06h/run_profile_serve.sh
