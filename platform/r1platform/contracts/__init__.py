"""Names and conventions that several parts of the platform must spell the same way.

One small module per contract, so serving, training, the pool controller and the local cluster
import the same definition instead of each keeping a copy:
- `deployment_name`: the Serve deployment name `model@pool` (build, parse, resolve the pool);
- `resources`: the Ray custom resource keys `pool:<P>` / `accelerator_type:<X>` and node labels;
- `placement_mode`: real GPUs or the simulated (virtual-node) fleet;
- `actors`: the Ray namespace and the training job's control actor name;
- `net`: a free local TCP port;
- `paths`: the one local directory (`R1P_CACHE_DIR`) everything is kept under.
"""
