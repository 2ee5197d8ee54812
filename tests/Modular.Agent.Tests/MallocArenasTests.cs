using Modular.Agent.Daemon;

namespace Modular.Agent.Tests;

/// <summary>The daemon caps glibc's malloc arenas (its RSS otherwise creeps up with the heap flat: bench/README.md, "Fault soak").</summary>
public sealed class MallocArenasTests
{
    [SkippableFact]
    public void Glibc_takes_the_arena_cap_unless_the_operator_set_one()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "glibc only");
        Skip.If(Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is { Length: > 0 }, "MALLOC_ARENA_MAX is set: the daemon leaves it alone");
        Assert.True(MallocArenas.Limit(), "mallopt(M_ARENA_MAX, 2) accepted");
    }
}
