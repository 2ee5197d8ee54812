[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// Each test starts its own daemon processes on its own sockets; running them side by side
// only adds load on a 2-core machine shared with other builds.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
