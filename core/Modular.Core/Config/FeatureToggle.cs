namespace Modular.Core.Config;

/// <summary>
/// Where the setting in force of an on/off feature came from, as <c>status</c> shows it
/// (<c>features.lazy_connections_source</c> and its siblings).
/// </summary>
public static class FeatureSource
{
    public const string Flag = "flag";
    public const string Environment = "environment";
    public const string Ui = "ui";
    public const string Config = "config";
    public const string Account = "account";
    public const string Default = "default";
}

/// <summary>
/// This machine's own setting of a feature the account also sets (lazy connections, flows, Rosenpass), by where it was
/// given; null: not given there. Any of them overrides the account in either direction.
/// </summary>
public sealed record LocalToggle(bool? Flag = null, bool? Environment = null, bool? Config = null)
{
    /// <summary>Not set on this machine at all: the account, else the default, decides.</summary>
    public static readonly LocalToggle Unset = new();

    /// <summary>The local value that wins (flag, then environment, then the TOML key); null when none was given.</summary>
    public bool? Value => Flag ?? Environment ?? Config;
}

/// <summary>A feature's resolved value and the source that decided it (one of <see cref="FeatureSource"/>).</summary>
public readonly record struct FeatureDecision(bool Enabled, string Source);

/// <summary>
/// The one rule for the features the account also sets. Highest first: command-line flag, environment variable, the
/// local UI's switch, the TOML key when present, the account's setting in the network map, the default (off).
/// The UI ranks below flag and environment because those are how an operator pins a machine (the UI then shows its
/// switch greyed out), and above the TOML because a switch flipped while the agent runs is the newer wish; it is kept
/// across restarts in state_dir, so it would otherwise be silently undone by the file on the next start.
/// </summary>
public static class FeatureResolver
{
    /// <param name="local">Flag, environment and TOML values of this machine.</param>
    /// <param name="ui">The local UI's switch; null when never switched (or the feature has none).</param>
    /// <param name="account">The account's setting; null before the first network map.</param>
    public static FeatureDecision Resolve(LocalToggle local, bool? ui, bool? account, bool defaultValue = false)
    {
        if (local.Flag is { } flag)
        {
            return new(flag, FeatureSource.Flag);
        }

        if (local.Environment is { } environment)
        {
            return new(environment, FeatureSource.Environment);
        }

        if (ui is { } switched)
        {
            return new(switched, FeatureSource.Ui);
        }

        if (local.Config is { } config)
        {
            return new(config, FeatureSource.Config);
        }

        return account is { } fromAccount ? new(fromAccount, FeatureSource.Account) : new(defaultValue, FeatureSource.Default);
    }
}
