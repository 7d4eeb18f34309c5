#!/usr/bin/env bash
set -u
export OUT
bash benches/results/gpu_2026-12-06h/run_checks2.sh
bash benches/results/gpu_2026-12-06h/run_profile_serve.sh
