namespace Modular.Core.Config;

/// <summary>
/// Settings a user changes while the agent runs (the local UI). The engine follows them within a second; a value set
/// here wins over the config file and the account's setting, null leaves those in force.
/// </summary>
public sealed class FeatureSwitches
{
    private readonly Lock _lock = new();
    private bool? _lazyConnections;
    private int _version;

    /// <summary>Lazy connections as the user switched them; null when not switched.</summary>
    public bool? LazyConnections
    {
        get
        {
            lock (_lock)
            {
                return _lazyConnections;
            }
        }
    }

    /// <summary>Grows with every change, so a reader can tell it has something new to apply.</summary>
    public int Version
    {
        get
        {
            lock (_lock)
            {
                return _version;
            }
        }
    }

    public void SetLazyConnections(bool? enabled)
    {
        lock (_lock)
        {
            _lazyConnections = enabled;
            _version++;
        }
    }
}
