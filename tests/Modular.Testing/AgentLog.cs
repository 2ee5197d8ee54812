using System.Text.RegularExpressions;

namespace Modular.Testing;

/// <summary>Reading the agent's log (console or file template: both put the level as "WRN]").</summary>
public static partial class AgentLog
{
    /// <summary>What the daemon logs when a clean stop begins.</summary>
    public const string StoppingMarker = "Stopping: closing connections and the interface";

    /// <summary>The warning, error and fatal lines after the last <see cref="StoppingMarker"/> (all of them when there is none).</summary>
    public static IReadOnlyList<string> ProblemsWhileStopping(string log)
    {
        var start = log.LastIndexOf(StoppingMarker, StringComparison.Ordinal);
        return log[Math.Max(0, start)..].Split('\n').Where(line => Problem().IsMatch(line)).ToList();
    }

    [GeneratedRegex(@"\b(WRN|ERR|FTL)\]")]
    private static partial Regex Problem();
}
