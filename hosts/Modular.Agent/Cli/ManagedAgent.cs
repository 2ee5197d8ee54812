using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Modular.Agent.Cli;

/// <summary>
/// The installed `modular` is a native-AOT build: it starts in a few milliseconds, so `status`
/// and `down` answer at once. Composing plugins needs the JIT (MEF, assembly loading), so the
/// commands that load plugins — `up`, `plugins`, `config check` — replace this process with
/// the managed build of the same program, `modulard`, installed beside it (see scripts/publish).
/// A managed `modular` (a plain `dotnet build`) runs every command itself.
/// </summary>
internal static class ManagedAgent
{
    public const string HostName = "modulard";

    /// <summary>True in the native-AOT build; a constant there, so the plugin code is trimmed away.</summary>
    public static bool IsNativeClient => !RuntimeFeature.IsDynamicCodeSupported;

    /// <summary>
    /// Replaces this process with `modulard` and the same arguments (same pid, environment and
    /// descriptors, so a service manager sees no difference). Returns only on failure.
    /// </summary>
    public static int Exec()
    {
        var path = Path.Combine(AppContext.BaseDirectory, HostName);
        if (!File.Exists(path))
        {
            Console.Error.WriteLine($"{path} is missing: this native `modular` runs `up`, `plugins` and `config check` through the managed agent installed beside it");
            return ExitCodes.Error;
        }

        var args = Environment.GetCommandLineArgs();
        var argv = new nint[args.Length + 1];
        try
        {
            argv[0] = Marshal.StringToCoTaskMemUTF8(path);
            for (var i = 1; i < args.Length; i++)
            {
                argv[i] = Marshal.StringToCoTaskMemUTF8(args[i]);
            }

            Console.Out.Flush();
            Daemon.MallocArenas.ExportForExec(); // modulard's runtime starts with the cap (see MallocArenas)
            var result = Execv(path, argv); // returns only on failure
            Console.Error.WriteLine($"could not start {path} (execv returned {result}): {Marshal.GetLastPInvokeErrorMessage()}");
            return ExitCodes.Error;
        }
        finally
        {
            foreach (var pointer in argv)
            {
                Marshal.FreeCoTaskMem(pointer);
            }
        }
    }

    [DllImport("libc", EntryPoint = "execv", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Execv([MarshalAs(UnmanagedType.LPUTF8Str)] string path, nint[] argv);
}
