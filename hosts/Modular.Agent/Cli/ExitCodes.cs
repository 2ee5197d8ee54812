namespace Modular.Agent.Cli;

/// <summary>The exit codes of every `modular` command.</summary>
internal static class ExitCodes
{
    public const int Ok = 0;

    /// <summary>The command ran and failed: bad config, no daemon, start-up refused.</summary>
    public const int Error = 1;

    /// <summary>The command line itself was wrong: unknown option, missing argument.</summary>
    public const int Usage = 2;
}
