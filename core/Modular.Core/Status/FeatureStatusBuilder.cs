using System.Collections.Immutable;
using Modular.Abstractions.Config;
using Modular.Core.Config;

namespace Modular.Core.Status;

/// <summary>The account's settings of the on/off features, from the network map; null where management said nothing (yet).</summary>
public sealed record AccountFeatures(bool? LazyConnections = null, bool? Flows = null, bool? Rosenpass = null, bool? RosenpassPermissive = null)
{
    /// <summary>Before the first network map: the account has not spoken.</summary>
    public static readonly AccountFeatures None = new();

    /// <summary>The account's settings as a network map carries them; <see cref="None"/> when it has none.</summary>
    public static AccountFeatures Of(Modular.Control.Management.AccountSettings? settings)
        => settings is null ? None : new(settings.LazyConnections, settings.Flows?.Enabled ?? false, settings.Rosenpass?.Enabled ?? false, settings.Rosenpass?.Permissive);
}

/// <summary>
/// Builds <see cref="FeatureStatus"/> from the one rule (<see cref="FeatureResolver"/>), the table of features not
/// built yet (<see cref="NotBuiltYet"/>) and what this run could not provide (a plugin missing, kernel mode): what
/// `status` shows at start, after every network map and after a UI switch.
/// </summary>
public static class FeatureStatusBuilder
{
    /// <param name="notAvailable">
    /// Features built but not available in this run, with why (by their status name, e.g. "netflow": no flow sink
    /// could be created; "rosenpass": no PSK provider gives its keys, or it waits for the first network map, see
    /// <see cref="RosenpassAvailability"/>; see <see cref="Merge"/>). A feature listed here is off in status and, while asked for, listed under
    /// <c>unavailable</c> as "requested by the account, not available: why" (asked for by the account) or "why".
    /// </param>
    public static FeatureStatus Build(AgentConfig config, bool? uiLazyConnections, AccountFeatures account, IReadOnlyDictionary<string, string>? notAvailable = null)
    {
        notAvailable ??= EmptyReasons;
        var lazy = FeatureResolver.Resolve(config.Features.LazyConnections, uiLazyConnections, account.LazyConnections);
        var rosenpass = Rosenpass(config, account);
        var netflow = FeatureResolver.Resolve(config.Netflow.Enabled, null, account.Flows);
        var decisions = new Dictionary<string, FeatureDecision>(StringComparer.Ordinal)
        {
            ["lazy_connections"] = lazy,
            ["rosenpass"] = rosenpass,
            ["netflow"] = netflow,
        };

        var permissive = RosenpassPermissive(config, account);
        var rosenpassInEffect = rosenpass.Enabled && NotBuiltYet.IsBuilt("rosenpass") && !notAvailable.ContainsKey("rosenpass");
        return new FeatureStatus(
            lazy.Enabled,
            ConfigDuration.Format(config.Features.InactivityTimeout),
            config.Features.AlwaysConnected,
            config.Connection.ForceRelay,
            config.Proxy.Kind,
            rosenpassInEffect,
            rosenpassInEffect && permissive,
            netflow.Enabled && NotBuiltYet.IsBuilt("netflow") && !notAvailable.ContainsKey("netflow"))
        {
            LazyConnectionsSource = lazy.Source,
            RosenpassSource = rosenpass.Source,
            NetflowSource = netflow.Source,
            Unavailable = WithRunReasons(NotBuiltYet.Unavailable(config, decisions), decisions, notAvailable),
        };
    }

    /// <summary>The reasons of every part that may lack a feature (flow logging, the PSK provider), as one map for <see cref="Build"/>.</summary>
    public static IReadOnlyDictionary<string, string> Merge(params IReadOnlyDictionary<string, string>?[] parts)
    {
        var merged = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in parts)
        {
            foreach (var (feature, why) in part ?? EmptyReasons)
            {
                merged.TryAdd(feature, why);
            }
        }

        return merged;
    }

    private static readonly IReadOnlyDictionary<string, string> EmptyReasons = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Adds the features asked for (their resolved decision is on) that this run cannot provide.</summary>
    private static ImmutableSortedDictionary<string, string> WithRunReasons(
        ImmutableSortedDictionary<string, string> notBuilt, Dictionary<string, FeatureDecision> decisions, IReadOnlyDictionary<string, string> notAvailable)
    {
        var result = notBuilt;
        foreach (var (feature, why) in notAvailable)
        {
            if (decisions.TryGetValue(feature, out var decision) && decision.Enabled && !result.ContainsKey(feature))
            {
                // A reason that only waits for the first map is no "not available" (and the account has not spoken then).
                var accountAsked = decision.Source == FeatureSource.Account && !RosenpassAvailability.IsPending(why);
                result = result.SetItem(feature, accountAsked ? $"requested by the account, not available: {why}" : why);
            }
        }

        return result;
    }

    /// <summary>Whether Rosenpass runs here: the local flag or key over the account's setting (<see cref="FeatureResolver"/>).</summary>
    public static FeatureDecision Rosenpass(AgentConfig config, AccountFeatures account)
        => FeatureResolver.Resolve(config.Rosenpass.Enabled, null, account.Rosenpass);

    /// <summary>Permissive only means something while Rosenpass runs; the local key wins, else the account's.</summary>
    public static bool RosenpassPermissive(AgentConfig config, AccountFeatures account)
        => config.Positions.ContainsKey("rosenpass.permissive") ? config.Rosenpass.Permissive : account.RosenpassPermissive ?? config.Rosenpass.Permissive;
}
