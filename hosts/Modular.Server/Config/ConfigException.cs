namespace Modular.Server.Config;

/// <summary>A server.toml problem; the message names the file, line, column and key and what was expected.</summary>
public sealed class ConfigException : Exception
{
    public ConfigException(string message)
        : base(message)
    {
    }

    public ConfigException()
    {
    }

    public ConfigException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
