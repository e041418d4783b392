// The public API of the linformer library in one include: models and their configuration, the
// attention interface and registry, the step-level Trainer with its options and callbacks,
// checkpoints, data (tokenizer, corpora, batches), inference on a checkpoint (Predictor) and sampling, the memory estimate, the op profiler, errors and the per-instance
// runtime options. A host program compiles against include/ alone and links liblinformer.so
// (docs/architecture.md, "The public API").
#pragma once

#include "linformer/allocator.h"
#include "linformer/arena.h"
#include "linformer/attention.h"
#include "linformer/batches.h"
#include "linformer/checkpoint.h"
#include "linformer/config.h"
#include "linformer/corpus.h"
#include "linformer/error.h"
#include "linformer/inference.h"
#include "linformer/memory.h"
#include "linformer/model.h"
#include "linformer/profile.h"
#include "linformer/registry.h"
#include "linformer/rng.h"
#include "linformer/runtime.h"
#include "linformer/sampling.h"
#include "linformer/schedule.h"
#include "linformer/tokenizer.h"
#include "linformer/tokens.h"
#include "linformer/trainer.h"
