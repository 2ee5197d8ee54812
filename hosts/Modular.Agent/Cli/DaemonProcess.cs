namespace Modular.Agent.Cli;

/// <summary>Whether the daemon's process is gone, from /proc (no Process API: the native AOT `modular` serves `down`).</summary>
internal static class DaemonProcess
{
    /// <summary>
    /// True when <paramref name="pid"/> no longer runs: no /proc entry, or a zombie (it has exited and
    /// only waits for its parent to reap it). A pid of 0 (a daemon that did not say) counts as gone.
    /// </summary>
    public static bool HasExited(int pid)
    {
        if (pid <= 0)
        {
            return true;
        }

        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return true;
        }

        // "pid (comm) state ...": comm may hold spaces and parentheses, so the state follows the last ')'.
        var close = stat.LastIndexOf(')');
        return close >= 0 && close + 2 < stat.Length && stat[close + 2] is 'Z' or 'X';
    }
}
