using System.Collections.Immutable;

namespace Modular.Core.Config;

/// <summary>
/// The agent's config keys that are accepted (so files written for the design stay valid) but whose feature is not
/// built yet. This table is the one place that says so: `config check` and `up` warn for every row whose key is
/// written, and `status` lists the feature under <c>features.unavailable</c> instead of showing it on. The issue that
/// builds a feature deletes its rows and its reason, and nothing else needs to change.
/// </summary>
public static class NotBuiltYet
{
    /// <summary>One accepted key that does nothing yet.</summary>
    /// <param name="Key">The dotted TOML key as in <see cref="AgentConfig.Positions"/>.</param>
    /// <param name="Feature">The name it is listed under in <c>features.unavailable</c> (a key of <see cref="Reasons"/>).</param>
    /// <param name="Example">A TOML value that asks for the feature (tests write it).</param>
    /// <param name="Requested">Whether this config asks for the feature through this key (the default may, too).</param>
    public sealed record Row(string Key, string Feature, string Example, Func<AgentConfig, bool> Requested);

    /// <summary>Why each feature is not available, by the name <c>features.unavailable</c> uses.</summary>
    public static readonly ImmutableSortedDictionary<string, string> Reasons = new Dictionary<string, string>
    {
        // Empty: every feature the design names is built (Rosenpass left with issue 15's namespace matrix and rotation tests).
    }.ToImmutableSortedDictionary(StringComparer.Ordinal);

    /// <summary>
    /// Features listed here that do take effect in part (their reason says how far): their keys' warning does not
    /// claim "it has no effect".
    /// </summary>
    public static readonly ImmutableSortedSet<string> PartlyBuilt = ImmutableSortedSet.Create<string>(StringComparer.Ordinal);

    /// <summary>What a warning adds after the reason: "; it has no effect", or nothing for a <see cref="PartlyBuilt"/> feature.</summary>
    public static string Effect(string feature) => PartlyBuilt.Contains(feature) ? "" : "; it has no effect";

    public static readonly IReadOnlyList<Row> Keys =
    [
    ];

    /// <summary>False while <paramref name="feature"/> has a reason here: it is never in effect, whatever asks for it.</summary>
    public static bool IsBuilt(string feature) => !Reasons.ContainsKey(feature);

    /// <summary>
    /// One line per row whose key is written in the file and asks for something, e.g.
    /// "agent.toml:12:11: rosenpass.enabled: accepted, but not verified end to end yet: ...".
    /// A default that asks for a feature is not warned about: nobody wrote it, and status shows it; nor is a
    /// key written to say "off" (<c>enabled = false</c>, <c>listen = ""</c>), which is true already.
    /// </summary>
    public static IReadOnlyList<string> Warnings(AgentConfig config)
    {
        var lines = new List<string>();
        foreach (var row in Keys)
        {
            if (config.Positions.TryGetValue(row.Key, out var at) && row.Requested(config))
            {
                lines.Add($"{config.SourcePath}:{at.Line}:{at.Column}: {row.Key}: accepted, but {Reasons[row.Feature]}{Effect(row.Feature)}");
            }
        }

        return lines;
    }

    /// <summary>
    /// The features asked for but not available, with why: through a key of this config (or its default), or through
    /// the account (<paramref name="decisions"/>: the resolved on/off features by their status name).
    /// </summary>
    public static ImmutableSortedDictionary<string, string> Unavailable(AgentConfig config, IReadOnlyDictionary<string, FeatureDecision> decisions)
    {
        var result = ImmutableSortedDictionary.CreateBuilder<string, string>(StringComparer.Ordinal);
        foreach (var (feature, reason) in Reasons)
        {
            if (decisions.TryGetValue(feature, out var decision) && decision.Enabled)
            {
                result[feature] = decision.Source == FeatureSource.Account ? $"requested by the account; {reason}" : reason;
            }
            else if (Keys.Any(row => row.Feature == feature && !IsToggle(row, decisions) && row.Requested(config)))
            {
                result[feature] = reason;
            }
        }

        return result.ToImmutable();
    }

    // A feature's own on/off key is decided by the resolver (a local false may override an account's true), not by the row.
    private static bool IsToggle(Row row, IReadOnlyDictionary<string, FeatureDecision> decisions)
        => decisions.ContainsKey(row.Feature) && row.Key == $"{row.Feature}.enabled";
}
