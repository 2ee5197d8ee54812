// Namespace tests start real processes and share 2 cores: one at a time keeps them inside their bounds.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
