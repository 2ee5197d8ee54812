namespace Modular.Core.Config;

/// <summary>
/// A configuration error that names where it is: file, line, column, key, and what was
/// expected. <see cref="Exception.Message"/> is the whole human-readable sentence, e.g.
/// "/etc/modular/agent.toml:12:8: proxy.kind: unknown plugin \"foo\"; available: udp, ebpf, bind".
/// </summary>
public sealed class ConfigException : Exception
{
    public ConfigException(string file, int line, int column, string? key, string problem)
        : base(Format(file, line, column, key, problem))
    {
        File = file;
        Line = line;
        Column = column;
        Key = key;
        Problem = problem;
    }

    public ConfigException()
        : this("", 0, 0, null, "invalid configuration")
    {
    }

    public ConfigException(string message)
        : this("", 0, 0, null, message)
    {
    }

    public ConfigException(string message, Exception innerException)
        : base(message, innerException)
    {
        File = "";
        Problem = message;
    }

    public string File { get; }

    /// <summary>1-based; 0 when the error is not tied to a line (e.g. a missing required key).</summary>
    public int Line { get; }

    public int Column { get; }

    public string? Key { get; }

    public string Problem { get; }

    private static string Format(string file, int line, int column, string? key, string problem)
    {
        var where = line > 0 ? $"{file}:{line}:{column}" : file;
        return key is null ? $"{where}: {problem}" : $"{where}: {key}: {problem}";
    }
}
