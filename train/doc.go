// Package train fits the classical models and trains the neural ones: a
// run folder per run (Start, Run: config.yaml, metrics.jsonl, loss.png,
// samples/, checkpoints/), and for the neural models one loop.
//
// The pieces, each in one place:
//
//   - State (state.go) is a run's whole training state: the model, its
//     moving average, the optimizer, the step counters and the data's
//     geometry. Save writes it into a checkpoint with the generators'
//     states; Restore loads one for a resume.
//   - Step (step.go) is one training step on one batch over a State:
//     forward and loss under the precision policy, backward, the
//     gradients' synchronisation, clipping, the optimizer and the moving
//     average, reading nothing back from the device. Graphed (graph.go)
//     captures it in a CUDA graph.
//   - The loop (loop.go) sets a run up in named phases (device, process
//     group, data, state, step, ranks) and feeds batches: logging,
//     checkpoints, sample grids, the test loss each epoch, a clean stop on
//     a signal or a NaN.
//   - Data parallelism (dist.go) runs the same loop in every rank of a
//     launcher's job, with DistributedDataParallel's semantics.
//
// Everything that touches libtorch runs on the torch thread (torch.Do).
package train
