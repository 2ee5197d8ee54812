using Modular.Core.Config;

namespace Modular.Core.Status;

/// <summary>
/// The words status uses when Rosenpass is asked for but not in effect (<see cref="FeatureStatus.Unavailable"/>'s
/// "rosenpass" entry), so the daemon at start, the engine before its first map and the PSK host after each map say the
/// same thing. Nothing pretends: the PSK provider starts only when a network map is applied (the account may still turn
/// Rosenpass off, and the provider needs the overlay address), so until then Rosenpass is pending, never on.
/// </summary>
public static class RosenpassAvailability
{
    /// <summary>How a reason that only waits for the first network map starts (the text form shows it as it is).</summary>
    public const string PendingPrefix = "pending first network map";

    /// <summary>"no PSK provider plugin named "x" is loaded (available: a, b)": what is missing, without what follows from it.</summary>
    public static string MissingProvider(string name, IEnumerable<string> available)
    {
        var names = available.Order(StringComparer.Ordinal).ToList();
        return $"no PSK provider plugin named \"{name}\" is loaded (available: {(names.Count == 0 ? "(none)" : string.Join(", ", names))})";
    }

    /// <summary>"pending first network map (the PSK provider "x" starts with it)".</summary>
    public static string Pending(string name) => $"{PendingPrefix} (the PSK provider \"{name}\" starts with it)";

    /// <summary>True for a reason that only says the first network map has not come yet (<see cref="Pending"/>).</summary>
    public static bool IsPending(string reason) => reason.StartsWith(PendingPrefix, StringComparison.Ordinal);

    /// <summary>
    /// Why Rosenpass is not in effect before the first network map, for <see cref="FeatureStatusBuilder.Build"/>: asked
    /// for by this machine's own setting (the account has not spoken yet), it is <see cref="Pending"/> while a provider by
    /// the configured name is loaded, else <see cref="MissingProvider"/>. Empty when it is not asked for locally.
    /// </summary>
    /// <param name="pskProviders">The names of the PSK provider plugins loaded in this run.</param>
    public static IReadOnlyDictionary<string, string> BeforeFirstMap(AgentConfig config, IEnumerable<string> pskProviders)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!FeatureStatusBuilder.Rosenpass(config, AccountFeatures.None).Enabled)
        {
            return new Dictionary<string, string>(StringComparer.Ordinal);
        }

        var available = pskProviders.ToList();
        var name = config.Rosenpass.Provider;
        var why = available.Contains(name, StringComparer.Ordinal) ? Pending(name) : MissingProvider(name, available);
        return new Dictionary<string, string>(StringComparer.Ordinal) { ["rosenpass"] = why };
    }
}
