using System.Runtime.InteropServices;

namespace Modular.Agent.Daemon;

/// <summary>
/// Caps glibc's malloc arenas for the daemon, as <c>MALLOC_ARENA_MAX=2</c> would. glibc gives threads arenas of their
/// own (up to 8 per core), and the runtime's native allocations (the JIT's scratch memory above all) land in
/// whichever arena the thread-pool thread of the moment holds: each arena keeps its high-water mark resident, so a
/// long-running daemon's RSS crept up for many minutes with its managed heap flat. Measured in the fault soak
/// (bench/README.md, "Fault soak"): RSS up to +9.8 % between minutes 4.9 and 7.4 uncapped, +0.5 to 1.8 % capped.
/// A cap set this late leaves the arenas the runtime's first threads already took (about six), so the systemd unit and
/// the native client's exec of `modulard` (<see cref="ExportForExec"/>) set MALLOC_ARENA_MAX=2 before the runtime
/// starts; this covers a daemon started any other way. An operator's own MALLOC_ARENA_MAX is left alone; elsewhere
/// than glibc this does nothing.
/// </summary>
internal static class MallocArenas
{
    /// <summary>The arenas the daemon allows: the main one and one more, so two threads need not queue for one lock.</summary>
    public const int Max = 2;

    private const string Variable = "MALLOC_ARENA_MAX";

    // M_ARENA_MAX in glibc's malloc.h.
    private const int MArenaMax = -8;

    /// <summary>Caps the arenas (call first thing, before the process has many threads); true when glibc took the cap.</summary>
    public static bool Limit()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable(Variable) is { Length: > 0 })
        {
            return false;
        }

        try
        {
            return Mallopt(MArenaMax, Max) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false; // a libc without mallopt (musl)
        }
    }

    /// <summary>
    /// Sets MALLOC_ARENA_MAX=2 in this process's native environment unless it is set, so that a program this process
    /// execs (the native client's `up` becomes `modulard`) starts capped, before the runtime creates any thread.
    /// </summary>
    public static void ExportForExec()
    {
        if (OperatingSystem.IsLinux())
        {
            _ = Setenv(Variable, Max.ToString(System.Globalization.CultureInfo.InvariantCulture), overwrite: 0);
        }
    }

    [DllImport("libc", EntryPoint = "setenv")]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    [DllImport("libc", EntryPoint = "mallopt")]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Mallopt(int param, int value);
}
