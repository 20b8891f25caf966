"""Training, evaluation and run directories.

    batching   tokenise once, bucket by length
    loop       the training loop (knows nothing about PEFT)
    evaluate   MRR over a whole split
    splits     the splits of a data directory, tokenised for one encoder
    runs       run directories and manifests
    train      one run end to end
    distributed  data parallel over several processes (accelerate)
    scoring    re-evaluate a run, write CodeXGLUE predictions
"""
