using Microsoft.Extensions.Logging;
using Modular.Abstractions.Config;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Peers;
using Modular.Core.Status;

namespace Modular.Core.Lazy;

/// <summary>
/// Turns lazy connections on or off as the features resolve (<see cref="FeatureResolver"/>: a local flag, variable,
/// UI switch or TOML key overrides the account either way). Lives here, beside the monitors, so the lazy feature is
/// one folder; the engine's map applier calls it with its apply gate held, since the next peer diff applies it.
/// Status shows every feature as in effect or unavailable, with the source that decided it.
/// </summary>
internal static class LazySwitch
{
    /// <summary>Resolves the features for <paramref name="map"/>, publishes them, and puts lazy connections in force on <paramref name="manager"/>.</summary>
    /// <param name="notAvailable">Features this run cannot provide, with why (see <see cref="FeatureStatusBuilder.Build"/>).</param>
    public static void Apply(ConnectionManager manager, NetworkMap map, AgentConfig config, FeatureSwitches switches, StatusRecorder recorder, ILogger logger, IReadOnlyDictionary<string, string>? notAvailable = null)
    {
        var features = config.Features;
        var account = AccountFeatures.Of(map.Settings);
        var status = FeatureStatusBuilder.Build(config, switches.LazyConnections, account, notAvailable);
        recorder.UpdateFeatures(_ => status);
        var enabled = status.LazyConnections;
        if (enabled == manager.Lazy.Enabled)
        {
            return;
        }

        manager.Lazy = new LazyOptions(enabled, features.InactivityTimeout, features.AlwaysConnected);
        if (enabled)
        {
            logger.LogInformation("Lazy connections on ({Source}): peers stay idle until traffic for them appears, and go idle after {Timeout} without",
                status.LazyConnectionsSource, ConfigDuration.Format(features.InactivityTimeout));
        }
        else
        {
            logger.LogInformation("Lazy connections off ({Source}): every peer connects at once", status.LazyConnectionsSource);
        }
    }
}
